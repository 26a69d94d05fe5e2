package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phonebridge/phonebridge/config"
	"github.com/phonebridge/phonebridge/internal/deadline"
)

// Bridge ties connectors, router, store and delivery together.
type Bridge struct {
	log       *slog.Logger
	store     *Store
	ownsStore bool
	// set holds the connectors; Reload swaps it for another.
	set    atomic.Pointer[connSet]
	router atomic.Pointer[Router]
	// build makes a connector from the config (Open's); nil when the
	// bridge was given its connectors (New), which Reload then keeps.
	build    func(cfg *config.Config, name string) (Connector, error)
	cfg      atomic.Pointer[config.Config]
	reloadMu sync.Mutex
	del      *deliverer
	ledger   ledger
	// keepMessages is store.keep_messages as started (a restart-only
	// setting); retention prunes past it from Start to Stop, nil when 0.
	keepMessages time.Duration
	retention    *retention
	// expiry forgets disappearing messages' text as they expire, from
	// Start to Stop (expiry.go).
	expiry *deadline.Timer

	// ephemeral bounds typing and read relays in flight; beyond it they
	// are shed, which is what best effort means.
	ephemeral chan struct{}

	// routes are the routes as configured; the router holds them with
	// chat names resolved to ids.
	routes    []config.Route
	resolveMu sync.Mutex // one resolution at a time
	moveMu    sync.Mutex // one move of chats at a time (chatmove.go)
	// noticesTo is where Sink.Notice posts; zero when not configured.
	noticesTo atomic.Pointer[Endpoint]

	obs Observer // set before Start

	mu      sync.Mutex
	states  map[string]ConnectorStatus
	started []startedConn
}

// connSet is the bridge's connectors at one time, never changed once made.
type connSet struct {
	conns map[string]Connector
	names []string // sorted: start order
}

func newConnSet(conns map[string]Connector) *connSet {
	cs := &connSet{conns: conns}
	for name := range conns {
		cs.names = append(cs.names, name)
	}
	sort.Strings(cs.names)
	return cs
}

// conns is the current set of connectors.
func (b *Bridge) conns() *connSet { return b.set.Load() }

// NoticeOrigin is the connector name notices come from: phonebridge itself.
const NoticeOrigin = "phonebridge"

// ConnectorStatus is a connector's last reported state.
type ConnectorStatus struct {
	State  State
	Detail string
	Since  time.Time
}

// Option adds to what Open builds the connectors with.
type Option func(*Env)

// WithMedia gives every connector the media server (Env.Media).
func WithMedia(m MediaPublisher) Option {
	return func(e *Env) { e.Media = m }
}

// Open opens the store under cfg and builds every configured connector
// from its registered type.
func Open(cfg *config.Config, log *slog.Logger, opts ...Option) (*Bridge, error) {
	if err := PrepareStateDir(cfg.StateDir); err != nil {
		return nil, err
	}
	store, err := OpenStore(cfg.Store.Path, cfg.Store.Sync)
	if err != nil {
		return nil, err
	}
	build := func(cfg *config.Config, name string) (Connector, error) {
		c := cfg.Connectors[name]
		t, ok := LookupType(c.Type)
		if !ok {
			return nil, fmt.Errorf("connectors.%s.type: connector type %q is not built into this phonebridge", name, c.Type)
		}
		env := NewEnv(cfg, name, store, log)
		for _, o := range opts {
			o(&env)
		}
		conn, err := t.New(env, c.Options)
		if err != nil {
			return nil, fmt.Errorf("connector %s: %w", name, err)
		}
		return conn, nil
	}
	conns := map[string]Connector{}
	for name := range cfg.Connectors {
		conn, err := build(cfg, name)
		if err != nil {
			store.Close()
			return nil, err
		}
		conns[name] = conn
	}
	b := New(store, conns, cfg, log)
	b.ownsStore = true
	b.build = build
	return b, nil
}

// New builds a bridge on an open store and ready connectors; the caller
// keeps the store (Open's bridge closes its own).
func New(store *Store, conns map[string]Connector, cfg *config.Config, log *slog.Logger) *Bridge {
	b := &Bridge{
		log:       log,
		store:     store,
		ephemeral: make(chan struct{}, 64),
		states:    map[string]ConnectorStatus{},
	}
	b.set.Store(newConnSet(conns))
	b.cfg.Store(cfg)
	b.keepMessages = cfg.Store.KeepMessages
	b.routes = cfg.Routes
	b.noticesTo.Store(&Endpoint{cfg.Notices.Connector, cfg.Notices.Chat})
	b.router.Store(NewRouter(cfg.Routes, b.takesChat))
	b.del = newDeliverer(store, log, cfg.Delivery, cfg.Relay, b.connector)
	b.SetObserver(NopObserver{})
	store.setLog(log)
	return b
}

func (b *Bridge) connector(name string) (Connector, bool) {
	c, ok := b.conns().conns[name]
	return c, ok
}

// takesChat reports whether connector could have a chat called chat.
func (b *Bridge) takesChat(connector, chat string) bool {
	c, _ := b.connector(connector)
	checker, ok := c.(ChatIDChecker)
	return !ok || checker.IsChatID(chat)
}

// Store is the bridge's database.
func (b *Bridge) Store() *Store { return b.store }

// SetRoutes replaces the routes, resolving chat names; events already
// queued keep their destinations.
func (b *Bridge) SetRoutes(ctx context.Context, routes []config.Route) error {
	b.resolveMu.Lock()
	b.routes = routes
	b.resolveMu.Unlock()
	return b.resolveRoutes(ctx)
}

// resolveRoutes turns chat names in the routes into ids, through the
// connectors that know them, and installs the result. A name the
// connector cannot know yet leaves its endpoint out until ChatsChanged; a
// name that is unknown or ambiguous is an error naming its YAML path, and
// leaves that endpoint out too.
func (b *Bridge) resolveRoutes(ctx context.Context) error {
	b.resolveMu.Lock()
	defer b.resolveMu.Unlock()
	resolved := make([]config.Route, 0, len(b.routes))
	conns := b.conns().conns
	var problems []error
	for i, route := range b.routes {
		r := route
		r.Endpoints = nil
		for j, ep := range route.Endpoints {
			resolver, ok := conns[ep.Connector].(ChatResolver)
			if ep.Chat == "" || !ok {
				r.Endpoints = append(r.Endpoints, ep)
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			id, err := resolver.ResolveChat(rctx, ep.Chat)
			cancel()
			path := fmt.Sprintf("routes[%d].endpoints[%d].chat", i, j)
			switch {
			case errors.Is(err, ErrChatListUnavailable):
				b.log.Warn("route endpoint waits for its chat list", "path", path, "chat", ep.Chat, "reason", err)
			case err != nil:
				problems = append(problems, fmt.Errorf("%s: %w", path, err))
			default:
				ep.Chat = id
				r.Endpoints = append(r.Endpoints, ep)
			}
		}
		resolved = append(resolved, r)
	}
	b.router.Store(NewRouter(resolved, b.takesChat))
	b.tellRoutedChats(resolved)
	b.mirrorChats(resolved)
	return errors.Join(problems...)
}

// mirrorChats hands each ChatMirror the chats of every ChatLister whose
// chats all reach it through a `chats: all` route, in the background.
func (b *Bridge) mirrorChats(routes []config.Route) {
	type pair struct{ origin, mirror string }
	pairs := map[pair]bool{}
	conns := b.conns().conns
	for _, r := range routes {
		for _, src := range r.Endpoints {
			if _, ok := conns[src.Connector].(ChatLister); !ok || src.Chats != config.AllChats || !src.Direction.Sends() {
				continue
			}
			for _, dst := range r.Endpoints {
				if _, ok := conns[dst.Connector].(ChatMirror); ok && dst.Connector != src.Connector && dst.Chats == config.AllChats && dst.Direction.Receives() {
					pairs[pair{src.Connector, dst.Connector}] = true
				}
			}
		}
	}
	for p := range pairs {
		lister, mirror := conns[p.origin].(ChatLister), conns[p.mirror].(ChatMirror)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			chats, err := lister.Chats(ctx, "")
			if err != nil {
				// Not linked or not loaded yet: ChatsChanged brings them.
				b.log.Debug("no chats to mirror yet", "origin", p.origin, "mirror", p.mirror, "reason", err)
				return
			}
			mirror.MirrorChats(p.origin, chats)
		}()
	}
}

// tellRoutedChats gives each RouteWatcher the fixed chats routes name on it.
func (b *Bridge) tellRoutedChats(routes []config.Route) {
	chats := map[string][]string{}
	for _, r := range routes {
		for _, ep := range r.Endpoints {
			if ep.Chat != "" && !slices.Contains(chats[ep.Connector], ep.Chat) {
				chats[ep.Connector] = append(chats[ep.Connector], ep.Chat)
			}
		}
	}
	cs := b.conns()
	for _, name := range cs.names {
		if w, ok := cs.conns[name].(RouteWatcher); ok {
			list := chats[name]
			sort.Strings(list)
			w.RoutedChats(list)
		}
	}
}

// Start migrates the store, starts every connector and resumes delivery of
// whatever the outbox still holds. On error nothing is left running.
func (b *Bridge) Start(ctx context.Context) error {
	if err := b.store.Migrate(ctx, "core", coreMigrations); err != nil {
		return err
	}
	if err := b.ledger.load(ctx, b.store); err != nil {
		return fmt.Errorf("read the message map: %w", err)
	}
	unclean, maybeSent, err := markRunning(ctx, b.store)
	if err != nil {
		return err
	}
	if unclean {
		b.del.maybeSentBelow = maybeSent
		b.log.Warn("the last run did not stop cleanly; destinations check for deliveries it may have made before repeating them")
	}
	// Names resolve before any connector runs, so no event can arrive
	// while its route is not yet known.
	if err := b.resolveRoutes(ctx); err != nil {
		return err
	}
	// Before any connector runs, so no event is taken under an old id.
	movedNotices, err := b.moveChats(ctx)
	if err != nil {
		return err
	}
	cs := b.conns()
	for _, name := range cs.names {
		if err := b.startConnector(ctx, name, cs.conns[name]); err != nil {
			stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			b.stopConnectors(stopCtx)
			cancel()
			return err
		}
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
	for _, n := range movedNotices {
		b.notice(n.from, n.text)
	}
	b.startRetention()
	b.startExpiry(ctx)
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
	pruneErr := b.stopRetention(delCtx)
	if b.expiry != nil {
		b.expiry.Stop()
	}
	answered, delErr := b.del.shutdown(delCtx, time.Second)
	if !answered {
		b.log.Warn("stopped with deliveries unanswered; their events stay in the outbox and are checked and sent again at the next start")
	}
	if answered && b.del.allRecorded(ctx) {
		// Every delivery made is recorded: the next start need not check.
		delErr = markStopped(ctx, b.store)
	}
	errs := []error{delErr, pruneErr}
	errs = append(errs, b.stopConnectors(ctx))
	if b.ownsStore {
		errs = append(errs, b.store.Close())
	}
	return errors.Join(errs...)
}

// startConnector starts conn as name, handing it what it asks of the
// core first, and records it as started.
func (b *Bridge) startConnector(ctx context.Context, name string, conn Connector) error {
	if lc, ok := conn.(LinkConsole); ok {
		lc.SetLinkAdmin(b)
	}
	b.setState(name, StateStarting, "")
	if err := conn.Start(ctx, sink{b, name}); err != nil {
		b.setState(name, StateFailed, err.Error())
		return fmt.Errorf("connector %s: %w", name, err)
	}
	b.mu.Lock()
	b.started = append(b.started, startedConn{name, conn})
	b.mu.Unlock()
	return nil
}

// startedConn is a connector Start succeeded for, to stop at the end.
type startedConn struct {
	name string
	conn Connector
}

func (b *Bridge) stopConnectors(ctx context.Context) error {
	b.mu.Lock()
	started := b.started
	b.started = nil
	b.mu.Unlock()
	var errs []error
	for i := len(started) - 1; i >= 0; i-- {
		if err := b.stopOne(ctx, started[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (b *Bridge) stopOne(ctx context.Context, sc startedConn) error {
	err := sc.conn.Stop(ctx)
	b.setState(sc.name, StateStopped, "")
	if err != nil {
		return fmt.Errorf("stop connector %s: %w", sc.name, err)
	}
	return nil
}

// Links reports every connector that links an account (bridge.Linker),
// sorted by name.
func (b *Bridge) Links() []LinkStatus {
	var out []LinkStatus
	cs := b.conns()
	for _, name := range cs.names {
		if l, ok := cs.conns[name].(Linker); ok {
			st := l.LinkStatus()
			st.Name = name
			out = append(out, st)
		}
	}
	return out
}

// Linker returns the named connector if it links accounts.
func (b *Bridge) Linker(name string) (Linker, bool) {
	c, _ := b.connector(name)
	l, ok := c.(Linker)
	return l, ok
}

// ChatLister returns the named connector if it lists its chats.
func (b *Bridge) ChatLister(name string) (ChatLister, bool) {
	c, _ := b.connector(name)
	l, ok := c.(ChatLister)
	return l, ok
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
	b.obs.StateChanged(name, st)
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
		b.obs.Accepted(name, ev.Kind)
		done(nil)
		return
	}
	if ev.ID == "" {
		ev.ID = KeyPrefix + "in." + randomHex(8)
	}
	if ev.History {
		dests = b.showingHistory(dests)
	}
	b.accept(&ev, dests, done)
}

// accept commits a checked durable event with its destinations, then hands
// the new outbox rows to their queues.
func (b *Bridge) accept(ev *Event, dests []Endpoint, done func(error)) {
	payload, err := json.Marshal(ev)
	if err != nil {
		done(fmt.Errorf("encode the event: %w", err))
		return
	}
	var res acceptResult
	now := time.Now()
	b.store.WriteAsync(func(tx *Tx) error {
		return b.ledger.accept(tx, ev, payload, dests, now, &res)
	}, func(err error) {
		if err != nil {
			done(fmt.Errorf("store the event: %w", err))
			return
		}
		if res.echo {
			b.log.Debug("dropped the echo of an event the bridge sent", "connector", ev.Chat.Connector, "chat", ev.Chat.ID, "id", ev.ID)
		}
		for _, q := range res.queued {
			b.del.offer(q.dest, q.row)
		}
		if b.expiry != nil {
			b.expiry.At(res.expires)
		}
		b.obs.Accepted(ev.Chat.Connector, ev.Kind)
		done(nil)
	})
}

// showingHistory is the destinations among dests whose connectors show
// history. A history event with none left is still accepted, so its id
// is known to later replies and duplicates.
func (b *Bridge) showingHistory(dests []Endpoint) []Endpoint {
	var out []Endpoint
	for _, d := range dests {
		if conn, ok := b.connector(d.Connector); ok && conn.Capabilities().History {
			out = append(out, d)
		}
	}
	return out
}

// relayEphemeral hands typing and read events straight to destinations
// that show them, without the outbox: they are worthless late.
func (b *Bridge) relayEphemeral(ev *Event, dests []Endpoint) {
	for _, d := range dests {
		conn, ok := b.connector(d.Connector)
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
				target, ok := b.readTarget(ctx, ev, d)
				if !ok {
					return
				}
				out.Target = target
			}
			start := time.Now()
			if _, err := conn.Send(ctx, &out); err != nil {
				b.log.Debug("typing or read receipt not relayed", "destination", d.String(), "err", err)
				b.obs.DeliveryFailed(d.Connector, ev.Kind, FailPermanent) // never retried
				return
			}
			b.obs.Delivered(d.Connector, ev.Kind, time.Since(start))
		}(d, conn)
	}
}

// readWaits are the pauses before looking a read's target up again: a
// phone that has a chat open reads a message as it arrives, often before
// the delivery that sent it there is recorded.
var readWaits = []time.Duration{50 * time.Millisecond, 200 * time.Millisecond, time.Second}

// readTarget is the destination's id of the message ev reads, looked up
// again a few times while it is not known yet; false when it is not.
func (b *Bridge) readTarget(ctx context.Context, ev *Event, d Endpoint) (string, bool) {
	for i := 0; ; i++ {
		msg, err := messageOf(b.store, ev.Chat.Connector, ev.Chat.ID, ev.Target)
		if err != nil {
			return "", false
		}
		if msg != 0 {
			ids, err := nativeOn(ctx, b.store, msg, d)
			if err != nil {
				return "", false
			}
			if len(ids) > 0 {
				return ids[len(ids)-1], true
			}
		}
		if i == len(readWaits) {
			return "", false
		}
		select {
		case <-ctx.Done():
			return "", false
		case <-time.After(readWaits[i]):
		}
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
func (s sink) Notice(text string)                  { s.b.notice(s.name, text) }

func (s sink) DescribeChat(ctx context.Context, origin ChatRef) (ChatDescription, error) {
	return s.b.describeChat(ctx, origin)
}

func (s sink) DescribeSender(ctx context.Context, origin ChatRef, sender string) (SenderDescription, error) {
	return s.b.describeSender(ctx, origin, sender)
}

func (s sink) DescriptionChanged(id string) { s.b.descriptionChanged(s.name, id) }

func (s sink) ChatsChanged() {
	go func() {
		if err := s.b.resolveRoutes(context.Background()); err != nil {
			s.b.log.Error("routes name chats that do not resolve; those endpoints stay out", "connector", s.name, "err", err)
		}
	}()
}

// notice posts an operator notice from connector from to the notices
// chat, through the outbox like any event.
func (b *Bridge) notice(from, text string) {
	b.log.Info("notice", "connector", from, "text", text)
	to := *b.noticesTo.Load()
	if to == (Endpoint{}) {
		return
	}
	ev := Event{
		Kind:   KindMessage,
		Chat:   ChatRef{Connector: NoticeOrigin, ID: "notices", Name: "phonebridge"},
		ID:     KeyPrefix + "notice." + randomHex(8),
		Sender: Sender{ID: NoticeOrigin, Name: "phonebridge"},
		Time:   time.Now(),
		Text:   text,
		Notice: true,
	}
	b.accept(&ev, []Endpoint{to}, func(err error) {
		if err != nil {
			b.log.Error("a notice could not be queued", "connector", from, "err", err)
		}
	})
}
