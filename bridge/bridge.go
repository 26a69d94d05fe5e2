package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phonebridge/phonebridge/config"
)

// Bridge ties connectors, router, store and delivery together.
type Bridge struct {
	log       *slog.Logger
	store     *Store
	ownsStore bool
	conns     map[string]Connector
	names     []string // start order
	router    atomic.Pointer[Router]
	del       *deliverer
	ledger    ledger

	// ephemeral bounds typing and read relays in flight; beyond it they
	// are shed, which is what best effort means.
	ephemeral chan struct{}

	mu      sync.Mutex
	states  map[string]ConnectorStatus
	started []string
}

// ConnectorStatus is a connector's last reported state.
type ConnectorStatus struct {
	State  State
	Detail string
	Since  time.Time
}

// Open opens the store under cfg and builds every configured connector
// from its registered type.
func Open(cfg *config.Config, log *slog.Logger) (*Bridge, error) {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state_dir %s: %w", cfg.StateDir, err)
	}
	store, err := OpenStore(cfg.Store.Path, cfg.Store.Sync)
	if err != nil {
		return nil, err
	}
	conns := map[string]Connector{}
	for name, c := range cfg.Connectors {
		t, ok := LookupType(c.Type)
		if !ok {
			store.Close()
			return nil, fmt.Errorf("connectors.%s.type: connector type %q is not built into this phonebridge", name, c.Type)
		}
		conn, err := t.New(Env{Name: name, Logger: log.With("connector", name), StateDir: cfg.StateDir, Store: store}, c.Options)
		if err != nil {
			store.Close()
			return nil, fmt.Errorf("connector %s: %w", name, err)
		}
		conns[name] = conn
	}
	b := New(store, conns, cfg, log)
	b.ownsStore = true
	return b, nil
}

// New builds a bridge on an open store and ready connectors; the caller
// keeps the store (Open's bridge closes its own).
func New(store *Store, conns map[string]Connector, cfg *config.Config, log *slog.Logger) *Bridge {
	b := &Bridge{
		log:       log,
		store:     store,
		conns:     conns,
		ephemeral: make(chan struct{}, 64),
		states:    map[string]ConnectorStatus{},
	}
	for name := range conns {
		b.names = append(b.names, name)
	}
	sort.Strings(b.names)
	b.router.Store(NewRouter(cfg.Routes))
	b.del = newDeliverer(store, log, cfg.Delivery, cfg.Relay, b.connector)
	return b
}

func (b *Bridge) connector(name string) (Connector, bool) {
	c, ok := b.conns[name]
	return c, ok
}

// Store is the bridge's database.
func (b *Bridge) Store() *Store { return b.store }

// SetRoutes replaces the routing table; events already queued keep their
// destinations.
func (b *Bridge) SetRoutes(routes []config.Route) { b.router.Store(NewRouter(routes)) }

// Start migrates the store, starts every connector and resumes delivery of
// whatever the outbox still holds. On error nothing is left running.
func (b *Bridge) Start(ctx context.Context) error {
	if err := b.store.Migrate(ctx, "core", coreMigrations); err != nil {
		return err
	}
	if err := b.ledger.load(ctx, b.store); err != nil {
		return fmt.Errorf("read the message map: %w", err)
	}
	for _, name := range b.names {
		b.setState(name, StateStarting, "")
		if err := b.conns[name].Start(ctx, sink{b, name}); err != nil {
			b.setState(name, StateFailed, err.Error())
			stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			b.stopConnectors(stopCtx)
			cancel()
			return fmt.Errorf("connector %s: %w", name, err)
		}
		b.mu.Lock()
		b.started = append(b.started, name)
		b.mu.Unlock()
	}
	dests, err := pendingDestinations(ctx, b.store)
	if err != nil {
		return fmt.Errorf("read the outbox: %w", err)
	}
	if len(dests) > 0 {
		b.log.Info("resuming undelivered events", "chats", len(dests))
	}
	for _, d := range dests {
		b.del.kick(d)
	}
	return nil
}

// Stop lets in-flight deliveries finish, stops the connectors and closes
// the store, all within ctx. What is still queued stays in the outbox.
func (b *Bridge) Stop(ctx context.Context) error {
	// Deliveries get most of the budget; connectors need the rest to
	// say goodbye to their servers.
	delCtx := ctx
	if deadline, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		delCtx, cancel = context.WithTimeout(ctx, time.Until(deadline)*6/10)
		defer cancel()
	}
	errs := []error{b.del.shutdown(delCtx)}
	errs = append(errs, b.stopConnectors(ctx))
	if b.ownsStore {
		errs = append(errs, b.store.Close())
	}
	return errors.Join(errs...)
}

func (b *Bridge) stopConnectors(ctx context.Context) error {
	b.mu.Lock()
	started := b.started
	b.started = nil
	b.mu.Unlock()
	var errs []error
	for i := len(started) - 1; i >= 0; i-- {
		name := started[i]
		if err := b.conns[name].Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop connector %s: %w", name, err))
		}
		b.setState(name, StateStopped, "")
	}
	return errors.Join(errs...)
}

// Run starts the bridge, waits for ctx to end, then stops within
// stopTimeout.
func (b *Bridge) Run(ctx context.Context, stopTimeout time.Duration) error {
	if err := b.Start(ctx); err != nil {
		if b.ownsStore {
			b.store.Close()
		}
		return err
	}
	b.log.Info("phonebridge is running", "connectors", len(b.names), "database", b.store.Path())
	<-ctx.Done()
	b.log.Info("stopping", "within", stopTimeout)
	stopCtx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	return b.Stop(stopCtx)
}

// Status reports every connector's last state.
func (b *Bridge) Status() map[string]ConnectorStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]ConnectorStatus, len(b.states))
	for k, v := range b.states {
		out[k] = v
	}
	return out
}

func (b *Bridge) setState(name string, st State, detail string) {
	b.mu.Lock()
	prev := b.states[name]
	changed := prev.State != st || prev.Detail != detail
	if changed {
		b.states[name] = ConnectorStatus{State: st, Detail: detail, Since: time.Now()}
	}
	b.mu.Unlock()
	if !changed {
		return
	}
	level := slog.LevelInfo
	switch st {
	case StateFailed:
		level = slog.LevelError
	case StateDisconnected:
		level = slog.LevelWarn
	}
	attrs := []any{"connector", name, "state", string(st)}
	if detail != "" {
		attrs = append(attrs, "detail", detail)
	}
	b.log.Log(context.Background(), level, "connector "+string(st), attrs...)
}

// submit accepts one inbound event from connector name.
func (b *Bridge) submit(name string, in *Event, done func(error)) {
	ev := *in
	ev.Chat.Connector = name
	ev.Origin = ChatRef{}
	if err := ev.Check(); err != nil {
		done(err)
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	dests := b.router.Load().Destinations(name, ev.Chat.ID)
	if len(dests) == 0 {
		done(fmt.Errorf("%w: %q", ErrNoRoute, ev.Chat.ID))
		return
	}
	if !ev.Kind.Durable() {
		b.relayEphemeral(&ev, dests)
		done(nil)
		return
	}
	if ev.ID == "" {
		ev.ID = KeyPrefix + "in." + randomHex(8)
	}
	payload, err := json.Marshal(&ev)
	if err != nil {
		done(fmt.Errorf("encode the event: %w", err))
		return
	}
	var res acceptResult
	now := time.Now()
	b.store.WriteAsync(func(tx *Tx) error {
		return b.ledger.accept(tx, &ev, payload, dests, now, &res)
	}, func(err error) {
		if err != nil {
			done(fmt.Errorf("store the event: %w", err))
			return
		}
		if res.echo {
			b.log.Debug("dropped the echo of an event the bridge sent", "connector", name, "chat", ev.Chat.ID, "id", ev.ID)
		}
		for _, q := range res.queued {
			b.del.offer(q.dest, q.row)
		}
		done(nil)
	})
}

// relayEphemeral hands typing and read events straight to destinations
// that show them, without the outbox: they are worthless late.
func (b *Bridge) relayEphemeral(ev *Event, dests []Endpoint) {
	for _, d := range dests {
		conn, ok := b.conns[d.Connector]
		if !ok {
			continue
		}
		caps := conn.Capabilities()
		if (ev.Kind == KindTyping && !caps.Typing) || (ev.Kind == KindRead && !caps.Read) {
			continue
		}
		select {
		case b.ephemeral <- struct{}{}:
		default:
			continue
		}
		go func(d Endpoint, conn Connector) {
			defer func() { <-b.ephemeral }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out := Outgoing{Event: *ev}
			out.Origin = ev.Chat
			out.Chat = ChatRef{Connector: d.Connector, ID: d.Chat}
			out.Target, out.ReplyTo = "", ""
			if ev.Kind == KindRead {
				msg, err := messageOf(b.store, ev.Chat.Connector, ev.Chat.ID, ev.Target)
				if err != nil || msg == 0 {
					return
				}
				ids, err := nativeOn(ctx, b.store, msg, d)
				if err != nil || len(ids) == 0 {
					return
				}
				out.Target = ids[len(ids)-1]
			}
			if _, err := conn.Send(ctx, &out); err != nil {
				b.log.Debug("typing or read receipt not relayed", "destination", d.String(), "err", err)
			}
		}(d, conn)
	}
}

// sink is the core as one connector sees it.
type sink struct {
	b    *Bridge
	name string
}

func (s sink) Submit(ev *Event, done func(error))  { s.b.submit(s.name, ev, done) }
func (s sink) Resume(chat string)                  { s.b.del.resume(s.name, chat) }
func (s sink) SetState(state State, detail string) { s.b.setState(s.name, state, detail) }
