// Package whatsapp is phonebridge's WhatsApp connector: the daemon is a
// linked device of the user's account (as WhatsApp Web is), on whatsmeow.
// One connector section is one link; several links may run at once.
package whatsapp

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types"
	waLog "go.mau.fi/whatsmeow/util/log"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
	"github.com/phonebridge/phonebridge/internal/deadline"
	"github.com/phonebridge/phonebridge/internal/linktext"
)

// Options are a whatsapp connector's settings.
type Options struct {
	// DeviceName is how the link shows in the phone's list of linked
	// devices.
	DeviceName string `yaml:"device_name"`
	// SenderFormat prefixes messages relayed into WhatsApp from other
	// platforms, which all go out as the account owner: {name} is the
	// sender's name. WhatsApp markup works (*bold*).
	SenderFormat string `yaml:"sender_format"`
	// StatusBroadcasts relays status updates (stories) too.
	StatusBroadcasts bool `yaml:"status_broadcasts"`
	// MaxMediaBytes is the largest attachment sent to WhatsApp.
	MaxMediaBytes int64 `yaml:"max_media_bytes"`
	// ReconnectMax caps the wait between attempts to reach WhatsApp.
	ReconnectMax time.Duration `yaml:"reconnect_max"`
	// History is what of WhatsApp's history sync is relayed.
	History HistoryOptions `yaml:"history"`
	// Names says which of a person's names shows: address_book (the
	// owner's name for them, as the phone shows it) or push_name (the
	// name they gave themselves).
	Names string `yaml:"names"`
	// Version pins the WhatsApp Web version the link announces
	// ("2.3000.1023456789"). Empty: whatsmeow's, and WhatsApp Web's
	// current one once WhatsApp refuses that as outdated (version.go).
	Version string `yaml:"version"`
	// Presence is what the link tells WhatsApp of itself after each
	// connect: available (WhatsApp then sends it contacts' typing) or
	// unavailable (no typing; the phone keeps its notifications).
	Presence string `yaml:"presence"`
}

// Which name of a person shows.
const (
	NamesAddressBook = "address_book"
	NamesPushName    = "push_name"
)

// service is the platform's name in what the link says about itself.
const service = "WhatsApp"

// Defaults.
const (
	DefaultDeviceName    = "phonebridge"
	DefaultSenderFormat  = "*{name}*: "
	DefaultMaxMediaBytes = 100 << 20
	DefaultReconnectMax  = 5 * time.Minute
)

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		DeviceName:    DefaultDeviceName,
		SenderFormat:  DefaultSenderFormat,
		MaxMediaBytes: DefaultMaxMediaBytes,
		ReconnectMax:  DefaultReconnectMax,
		History:       HistoryOptions{Backfill: BackfillRecent, PerChat: DefaultHistoryPerChat},
		Names:         NamesAddressBook,
		Presence:      PresenceAvailable,
	}
}

// Validate implements config.Validator.
func (o *Options) Validate(c *config.Checker) {
	c.Required("device_name", o.DeviceName)
	c.Positive("max_media_bytes", o.MaxMediaBytes)
	if o.ReconnectMax < time.Second {
		c.Errorf("reconnect_max", "must be at least 1s (got %s)", o.ReconnectMax)
	}
	o.History.validate(c.At("history"))
	c.OneOf("names", o.Names, NamesAddressBook, NamesPushName)
	c.OneOf("presence", o.Presence, PresenceAvailable, PresenceUnavailable)
	if o.Version != "" {
		if _, err := parseVersion(o.Version); err != nil {
			c.Errorf("version", "%s", err)
		}
	}
}

func init() {
	bridge.Register(bridge.ConnectorType{
		Name:       "whatsapp",
		NewOptions: func() any { return NewOptions() },
		New: func(env bridge.Env, opts any) (bridge.Connector, error) {
			return New(env, opts.(*Options))
		},
	})
}

// Connector is one WhatsApp link.
type Connector struct {
	name  string
	log   *slog.Logger
	opts  Options
	store *bridge.Store
	db    *sql.DB // whatsmeow's pool on the bridge's database, shared by every link (the store closes it)
	// closed is set when Stop returns: errors of whatsmeow's goroutines
	// that outlive Disconnect (an app state fetch) are then its leftovers.
	closed *atomic.Bool
	// backfillKick wakes the history backfill (history.go).
	backfillKick chan struct{}
	history      historyState
	people       people // who is known by LID for good (people.go)
	placeholders placeholders
	calls        callLog // calls rung, until they end (unreadable.go)
	phone        phoneSeen
	container    *sqlstore.Container
	lockPath     string
	// newClient makes a whatsmeow client for a device; tests put a fake.
	newClient func(dev *store.Device) waClient
	// version is the WhatsApp Web version the clients announce.
	version versionState
	// web fetches WhatsApp Web's page, for its current version; nil is
	// Go's default client (tests and -tags fakewa: the fake's).
	web *http.Client

	mu      sync.Mutex
	sink    bridge.Sink // nil when not started (a CLI linking in-process)
	client  waClient
	device  *store.Device
	status  bridge.LinkStatus
	linking bool
	lock    *fileLock
	ctx     context.Context // lives from Start to Stop
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	chats chatCache
	desc  describeCache // topics and pictures, for DescribeChat and DescribeSender
	// expiry forgets disappeared messages' text (expiry.go).
	expiry *deadline.Timer
}

// New builds a connector: it opens the session store (whatsmeow's tables
// in the bridge's database) and finds the link's device, without
// connecting.
func New(env bridge.Env, opts *Options) (*Connector, error) {
	c := &Connector{
		name:         env.Name,
		log:          env.Logger,
		opts:         *opts,
		store:        env.Store,
		lockPath:     filepath.Join(env.StateDir, "whatsapp-"+env.Name+".lock"),
		closed:       new(atomic.Bool),
		backfillKick: make(chan struct{}, 1),
		history:      historyState{pending: map[string]int{}},
	}
	c.status = bridge.LinkStatus{Name: c.name, Service: service, State: bridge.LinkStopped, Since: time.Now()}
	c.expiry = deadline.New(c.forgetExpired)
	setOSVersion()
	if opts.Version != "" {
		v, err := parseVersion(opts.Version)
		if err != nil {
			return nil, fmt.Errorf("version %s", err)
		}
		c.version.v, c.version.pinned = v, true
	}
	var fakeHTTP *http.Client
	if clientHook != nil {
		var err error
		if fakeHTTP, err = clientHook(c.log); err != nil {
			return nil, err
		}
		c.desc.http = fakeHTTP
		c.web = fakeHTTP
	}
	c.newClient = func(dev *store.Device) waClient {
		cli := whatsmeow.NewClient(dev, newWALogger(c.log, c.closed))
		c.announceVersion(cli)
		if fakeHTTP != nil {
			cli.SetPreLoginHTTPClient(fakeHTTP)
			cli.SetWebsocketHTTPClient(fakeHTTP)
			cli.SetMediaHTTPClient(fakeHTTP)
		}
		cli.EnableAutoReconnect = true
		// Acknowledge a message only once the handler has committed it, and
		// keep its plaintext so a redelivery (after the handler said no,
		// or a crash) can still be decrypted: nothing accepted is lost.
		cli.SynchronousAck = true
		cli.EnableDecryptedEventBuffer = true
		// History syncs are downloaded and stored in the message handler,
		// so they too are acknowledged only once stored.
		cli.ManualHistorySyncDownload = true
		return cli
	}
	ctx := context.Background()
	if err := env.Store.Migrate(ctx, "whatsapp", migrations); err != nil {
		return nil, err
	}
	// One pool for every link in the process: a pool per link cost each
	// linked account about 500 KB of SQLite connections (issue 17). The
	// container (whatsmeow's caches and locks) stays per link.
	db := env.Store.SharedPool()
	c.db = db
	c.container = sqlstore.NewWithDB(db, "sqlite3", newWALogger(c.log, c.closed))
	if err := c.prepareSessionStore(ctx, filepath.Join(env.StateDir, "whatsapp-store.lock")); err != nil {
		return nil, err
	}
	dev, err := c.loadDevice(ctx)
	if err != nil {
		return nil, err
	}
	guardContacts(dev)
	c.device = dev
	if dev != nil {
		c.status.Account = accountOf(dev)
	} else {
		c.status.State = bridge.LinkUnlinked
	}
	c.chats.init(c)
	return c, nil
}

// storeLockWait bounds the wait for another process preparing the session
// store; preparing takes milliseconds.
const storeLockWait = time.Minute

// prepareSessionStore creates or upgrades whatsmeow's tables, under a lock
// that other phonebridge processes on the state dir take too. whatsmeow's
// upgrade reads the schema version outside its transaction, so a second
// process (`phonebridge links` while the daemon starts) would run the same
// step again and fail on a table the first just made.
func (c *Connector) prepareSessionStore(ctx context.Context, lockPath string) error {
	lock, err := waitLock(lockPath, storeLockWait)
	if errors.Is(err, errLocked) {
		return fmt.Errorf("prepare the WhatsApp session store: another phonebridge process has held %s for over %s; stop that process, then start again", lockPath, storeLockWait)
	}
	if err != nil {
		return fmt.Errorf("prepare the WhatsApp session store: %w", err)
	}
	defer lock.release()
	if err := c.container.Upgrade(ctx); err != nil {
		return fmt.Errorf("prepare the WhatsApp session store: %w", err)
	}
	return nil
}

// Capabilities implements bridge.Connector.
func (c *Connector) Capabilities() bridge.Capabilities {
	return bridge.Capabilities{
		Edits: true, Deletes: true, Reactions: true, Replies: true, Media: true,
		Locations: true, Polls: true, HTML: true, Typing: true, Read: true,
		MaxTextLength: 65536,
	}
}

// Start implements bridge.Connector: with a linked device it connects in
// the background, retrying with backoff; without one it waits for
// `phonebridge link`.
func (c *Connector) Start(ctx context.Context, sink bridge.Sink) error {
	lock, err := acquireLock(c.lockPath)
	if err != nil {
		return fmt.Errorf("WhatsApp link %q is in use by another phonebridge process (a `phonebridge link` running?): %w", c.name, err)
	}
	c.mu.Lock()
	c.lock = lock
	c.sink = sink
	c.ctx, c.cancel = context.WithCancel(context.Background())
	dev, ctx := c.device, c.ctx
	c.mu.Unlock()
	// Not in wg, which counts the client's goroutines: the backfill
	// lives as long as the connector runs.
	c.history.worker.Add(1)
	go func() {
		defer c.history.worker.Done()
		c.backfill(ctx)
	}()
	c.kickBackfill() // what a crash left unrelayed
	c.loadPhoneSeen(ctx)
	if next, err := c.nextExpiry(ctx); err != nil {
		c.log.Warn("could not read when disappearing messages expire; their text is forgotten at the next one", "link", c.name, "err", err)
	} else {
		c.expiry.At(next)
	}
	if dev == nil {
		// New already knew it is unlinked; the core learns it now.
		st := c.LinkStatus()
		_, line := c.stateLine(st)
		sink.SetState(coreState(st.State), line)
		return nil
	}
	c.startClient(c.newClient(dev), dev)
	return nil
}

// startClient makes cli the link's client and connects it.
func (c *Connector) startClient(cli waClient, dev *store.Device) {
	cli.AddEventHandlerWithSuccessStatus(c.handle)
	c.mu.Lock()
	c.client, c.device = cli, dev
	c.status.Account = accountOf(dev)
	ctx := c.ctx
	c.mu.Unlock()
	c.setState(bridge.LinkConnecting, bridge.ReasonNone, "")
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.connect(ctx, cli)
	}()
}

// connect dials WhatsApp until it answers; once connected, whatsmeow
// reconnects by itself after drops.
func (c *Connector) connect(ctx context.Context, cli waClient) {
	wait := time.Second
	var lastErr string
	for {
		if !c.isCurrent(cli) {
			return // unlinked while waiting: its keys may be gone
		}
		err := cli.Connect()
		if ctx.Err() != nil || !c.isCurrent(cli) {
			// Stopped or unlinked while dialling: a client that is no
			// longer the link's must not stay connected or keep trying.
			cli.Disconnect()
			return
		}
		if err == nil || errors.Is(err, whatsmeow.ErrAlreadyConnected) {
			return
		}
		if msg := err.Error(); msg != lastErr {
			lastErr = msg
			c.setState(bridge.LinkConnecting, bridge.ReasonNetworkDown, msg)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait/2 + rand.N(wait/2+1)):
		}
		wait = min(wait*2, c.opts.ReconnectMax)
	}
}

// spawn runs fn in the connector's wait group, with its run context,
// unless Stop has begun (Stop cancels before it waits, so a goroutine
// added here is one it waits for).
func (c *Connector) spawn(fn func(ctx context.Context)) {
	c.mu.Lock()
	ctx := c.ctx
	if ctx == nil || ctx.Err() != nil {
		c.mu.Unlock()
		return
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		fn(ctx)
	}()
}

// Stop implements bridge.Connector.
func (c *Connector) Stop(ctx context.Context) error {
	c.mu.Lock()
	cli, cancel, lock := c.client, c.cancel, c.lock
	c.client, c.lock = nil, nil
	c.mu.Unlock()
	if cli != nil {
		c.leavePresence(ctx, cli)
	}
	if cancel != nil {
		cancel()
	}
	if cli != nil {
		cli.Disconnect()
	}
	done := make(chan struct{})
	go func() { c.wg.Wait(); c.history.worker.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	c.stopPhoneCheck()
	c.expiry.Stop()
	c.setState(bridge.LinkStopped, bridge.ReasonNone, "")
	lock.release()
	c.closed.Store(true)
	return nil
}

// LinkStatus implements bridge.Linker.
func (c *Connector) LinkStatus() bridge.LinkStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// setState records the link's state, why and WhatsApp's own words for
// it, and reports it to the core.
func (c *Connector) setState(state bridge.LinkState, reason bridge.LinkReason, cause string) {
	c.setStatus(func(s *bridge.LinkStatus) { s.State, s.Reason, s.Cause, s.Until = state, reason, cause, time.Time{} })
}

func (c *Connector) setStatus(change func(*bridge.LinkStatus)) {
	c.mu.Lock()
	before := c.status
	change(&c.status)
	if c.status.State != before.State {
		c.status.Since = time.Now()
	}
	st, sink := c.status, c.sink
	c.mu.Unlock()
	if st.State == before.State && st.Reason == before.Reason && st.Cause == before.Cause && st.Until.Equal(before.Until) {
		return
	}
	level, line := c.stateLine(st)
	if sink == nil {
		// Not started (a CLI linking in-process): no core to tell.
		c.log.Log(context.Background(), level, line, "link", c.name, "state", st.State)
		return
	}
	// The core logs the change, with this line, once.
	cs := coreState(st.State)
	if st.State == bridge.LinkConnecting && st.Reason != bridge.ReasonNone {
		cs = bridge.StateDisconnected // connecting again after a failure: a warning
	}
	sink.SetState(cs, line)
}

// stateLine is the operator's line for a link state: what happened and
// what to do.
func (c *Connector) stateLine(st bridge.LinkStatus) (slog.Level, string) {
	switch st.State {
	case bridge.LinkConnected, bridge.LinkStopped:
		return slog.LevelInfo, linktext.CLI.Line(st)
	case bridge.LinkConnecting:
		if st.Reason == bridge.ReasonNone {
			return slog.LevelInfo, linktext.CLI.Line(st)
		}
	}
	return slog.LevelWarn, linktext.CLI.Line(st)
}

// coreState maps a link state onto the core's connector states.
func coreState(s bridge.LinkState) bridge.State {
	switch s {
	case bridge.LinkConnected:
		return bridge.StateConnected
	case bridge.LinkConnecting:
		return bridge.StateConnecting
	case bridge.LinkStopped:
		return bridge.StateStopped
	case bridge.LinkPhoneOffline, bridge.LinkUnlinked, bridge.LinkBanned:
		// Waiting: for the phone, the user or the ban's end.
		return bridge.StateDisconnected
	}
	return bridge.StateFailed
}

// current returns the client and device, if linked and started.
func (c *Connector) current() (waClient, *store.Device) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.client, c.device
}

// isCurrent reports whether cli is still the link's client.
func (c *Connector) isCurrent(cli waClient) bool {
	cur, _ := c.current()
	return cur == cli
}

// reconnectAfter connects the link's client again after d, for the
// refusals after which whatsmeow does not reconnect by itself (a
// temporary ban, an unknown connect failure).
func (c *Connector) reconnectAfter(d time.Duration, reason bridge.LinkReason, cause string) {
	cli, _ := c.current()
	ctx := c.runCtx()
	if cli == nil {
		return
	}
	// Not in wg: Stop may be waiting already. The context ends it.
	go func() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		if ctx.Err() != nil || !c.isCurrent(cli) {
			return
		}
		c.setState(bridge.LinkConnecting, reason, cause)
		c.connect(ctx, cli)
	}()
}

// dev is the link's device, nil when not linked.
func (c *Connector) dev() *store.Device {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.device
}

// ownJID is the account's own JID, without device.
func ownJID(dev *store.Device) types.JID {
	if dev == nil || dev.ID == nil {
		return types.EmptyJID
	}
	return dev.ID.ToNonAD()
}

func accountOf(dev *store.Device) bridge.LinkAccount {
	if dev == nil || dev.ID == nil {
		return bridge.LinkAccount{}
	}
	return bridge.LinkAccount{
		ID:     dev.ID.ToNonAD().String(),
		Handle: "+" + dev.ID.User,
		Name:   dev.PushName,
		Device: dev.Platform,
	}
}

// newWALogger adapts whatsmeow's logger to slog: its info lines are
// chatter for an operator, so they go to debug.
func newWALogger(log *slog.Logger, closed *atomic.Bool) waLog.Logger {
	return walog{log, closed}
}

type walog struct {
	l      *slog.Logger
	closed *atomic.Bool // the connector stopped: errors are its leftovers
}

func (w walog) Errorf(msg string, args ...any) {
	line := "whatsmeow: " + fmt.Sprintf(msg, args...)
	switch {
	case strings.HasPrefix(msg, "Client outdated (405)"):
		// The link reports this itself, with what to do (update).
		w.l.Debug(line)
	case w.closed.Load():
		// A request whatsmeow began before the stop, failing now that
		// the link stopped: nothing for an operator to do.
		w.l.Debug(line + " (after the link stopped)")
	default:
		w.l.Error(line)
	}
}
func (w walog) Warnf(msg string, args ...any) { w.l.Warn("whatsmeow: " + fmt.Sprintf(msg, args...)) }
func (w walog) Infof(msg string, args ...any) { w.l.Debug("whatsmeow: " + fmt.Sprintf(msg, args...)) }
func (w walog) Debugf(msg string, args ...any) {
	if w.l.Enabled(context.Background(), slog.LevelDebug-4) {
		w.l.Debug("whatsmeow: " + fmt.Sprintf(msg, args...))
	}
}
func (w walog) Sub(module string) waLog.Logger { return w }
