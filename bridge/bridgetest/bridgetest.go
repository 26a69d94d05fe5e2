// Package bridgetest has a fake connector and a harness for testing the
// core and anything built on it without a real platform.
package bridgetest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
)

// AllCaps is every capability, no length limit.
var AllCaps = bridge.Capabilities{Edits: true, Deletes: true, Reactions: true, Replies: true, Media: true, HTML: true, Typing: true, Read: true}

// Fake is a connector that records what it is sent and injects events.
// Native ids it creates are "NAME-1", "NAME-2", ...
type Fake struct {
	name string
	caps bridge.Capabilities

	mu   sync.Mutex
	sink bridge.Sink
	sent []bridge.Outgoing
	keys map[string]string // idempotency: key → native id
	// sends counts the Sends that reached the fake per key, a repeat
	// included: IRC, which has no idempotency key, would show each.
	sends   map[string]int
	next    int
	fail    func(out *bridge.Outgoing) error
	block   chan struct{}
	blocked chan struct{} // gets a value each time Send starts waiting on block
	notify  chan struct{}
	media   map[string]string
	// chats maps chat names to ids for ResolveChat; nil resolves every
	// name to itself. chatsReady false makes it report the list unavailable.
	chats      map[string]string
	chatsReady bool
	// isChatID, when set, is the fake's bridge.ChatIDChecker.
	isChatID func(string) bool
	routed   [][]string // each RoutedChats call
	// moves are what ChatMoves returns, once; seen is what it was told.
	moves []bridge.ChatMove
	seen  []string
	// moved is each origin's moves as MoveChats last made them.
	moved map[string][]bridge.ChatMove
	// movedLive is each ChatsMoved call, as "origin: from>to ...".
	movedLive []string
}

// NewFake returns a fake connector called name with caps.
func NewFake(name string, caps bridge.Capabilities) *Fake {
	return &Fake{name: name, caps: caps, keys: map[string]string{}, sends: map[string]int{}, blocked: make(chan struct{}, 16), notify: make(chan struct{}, 1), media: map[string]string{}}
}

// Name is the connector's name.
func (f *Fake) Name() string { return f.name }

// SetChatMoves makes the next start move the fake's chats (see
// bridge.ChatMoveSource), once.
func (f *Fake) SetChatMoves(moves []bridge.ChatMove) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.moves = moves
}

// ChatMoves implements bridge.ChatMoveSource with what SetChatMoves set.
func (f *Fake) ChatMoves(ctx context.Context, seen func() ([]string, error)) ([]bridge.ChatMove, error) {
	f.mu.Lock()
	moves := f.moves
	f.moves = nil
	f.mu.Unlock()
	if len(moves) == 0 {
		return nil, nil
	}
	ids, err := seen()
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.seen = ids
	f.mu.Unlock()
	return moves, nil
}

// Seen is the ids the core listed to the last ChatMoves that moved.
func (f *Fake) Seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen
}

// MoveChats implements bridge.ChatMover: it records the moves and reports
// one line.
func (f *Fake) MoveChats(tx *bridge.Tx, origin string, moves []bridge.ChatMove) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.moved == nil {
		f.moved = map[string][]bridge.ChatMove{}
	}
	f.moved[origin] = moves
	return []string{fmt.Sprintf("%s moved %d chats of %s", f.name, len(moves), origin)}, nil
}

// ChatsMoved implements bridge.ChatsMovedWatcher, recording each call.
func (f *Fake) ChatsMoved(origin string, moves []bridge.ChatMove) {
	f.mu.Lock()
	defer f.mu.Unlock()
	call := origin + ":"
	for _, m := range moves {
		call += " " + m.From + ">" + m.To
	}
	f.movedLive = append(f.movedLive, call)
}

// MovedLive is what each ChatsMoved call said, as "origin: from>to ...".
func (f *Fake) MovedLive() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.movedLive...)
}

// MoveChatsNow asks the core, through the fake's sink, to move its chats
// now (bridge.ChatMoveSink), as a connector that learnt them does.
func (f *Fake) MoveChatsNow(ctx context.Context, moves []bridge.ChatMove) error {
	f.mu.Lock()
	sink := f.sink
	f.mu.Unlock()
	ms, ok := sink.(bridge.ChatMoveSink)
	if !ok {
		return fmt.Errorf("%s: the sink %T moves no chats while running", f.name, sink)
	}
	return ms.MoveChatsNow(ctx, moves)
}

// Moved is the moves MoveChats last made for origin's chats.
func (f *Fake) Moved(origin string) []bridge.ChatMove {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.moved[origin]
}

// FailWith makes Send return fn's error (nil lets it through).
func (f *Fake) FailWith(fn func(out *bridge.Outgoing) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

// Block makes Send wait until the returned func is called.
func (f *Fake) Block() (release func()) {
	ch := make(chan struct{})
	f.mu.Lock()
	f.block = ch
	f.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			f.block = nil
			f.mu.Unlock()
			close(ch)
		})
	}
}

// WaitBlocked waits until a Send is held by Block.
func (f *Fake) WaitBlocked(t testing.TB) {
	t.Helper()
	select {
	case <-f.blocked:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no Send reached the block in 10s", f.name)
	}
}

// SetChats gives the fake a chat directory for ResolveChat (name → id);
// ready false makes it answer that its chat list is not available yet.
func (f *Fake) SetChats(chats map[string]string, ready bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.chats, f.chatsReady = chats, ready
}

// ResolveChat implements bridge.ChatResolver: an id (a value of the
// directory) or a name in it; anything when there is no directory.
func (f *Fake) ResolveChat(ctx context.Context, nameOrID string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.chats == nil {
		return nameOrID, nil
	}
	if !f.chatsReady {
		return "", fmt.Errorf("%s: %w", f.name, bridge.ErrChatListUnavailable)
	}
	for name, id := range f.chats {
		if nameOrID == id || nameOrID == name {
			return id, nil
		}
	}
	return "", fmt.Errorf("no chat called %q on %s", nameOrID, f.name)
}

// SetChatIDs says which chat ids the fake could have (nil: any).
func (f *Fake) SetChatIDs(isChatID func(id string) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.isChatID = isChatID
}

// IsChatID implements bridge.ChatIDChecker.
func (f *Fake) IsChatID(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.isChatID == nil || f.isChatID(id)
}

// RoutedChats implements bridge.RouteWatcher, recording each call.
func (f *Fake) RoutedChats(chats []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routed = append(f.routed, append([]string(nil), chats...))
}

// Routed returns what each RoutedChats call said.
func (f *Fake) Routed() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]string(nil), f.routed...)
}

// Sink is the core as this fake sees it, once started.
func (f *Fake) Sink() bridge.Sink {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sink
}

// Start implements bridge.Connector.
func (f *Fake) Start(ctx context.Context, sink bridge.Sink) error {
	f.mu.Lock()
	f.sink = sink
	f.mu.Unlock()
	sink.SetState(bridge.StateConnected, "fake")
	return nil
}

// Stop implements bridge.Connector.
func (f *Fake) Stop(ctx context.Context) error { return nil }

// Capabilities implements bridge.Connector.
func (f *Fake) Capabilities() bridge.Capabilities { return f.caps }

// Send implements bridge.Connector: it honours the idempotency key, as a
// Matrix homeserver honours a txnId.
func (f *Fake) Send(ctx context.Context, out *bridge.Outgoing) (string, error) {
	f.mu.Lock()
	block, fail := f.block, f.fail
	f.mu.Unlock()
	if block != nil {
		select {
		case f.blocked <- struct{}{}:
		default:
		}
		select {
		case <-block:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if fail != nil {
		if err := fail(out); err != nil {
			return "", err
		}
	}
	// Read the media as a real destination would.
	text := ""
	for _, m := range out.Media {
		if m.Open == nil {
			return "", bridge.Permanentf("media %q has no Open", m.Name)
		}
		rc, err := m.Open(ctx)
		if err != nil {
			return "", err
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return "", err
		}
		text += string(b)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sends[out.Key]++
	if id, ok := f.keys[out.Key]; ok && out.Key != "" {
		return id, nil
	}
	f.next++
	id := fmt.Sprintf("%s-%d", f.name, f.next)
	if out.Key != "" {
		f.keys[out.Key] = id
	}
	f.sent = append(f.sent, *out)
	if text != "" {
		f.media[id] = text
	}
	select {
	case f.notify <- struct{}{}:
	default:
	}
	return id, nil
}

// Repeats lists the delivery keys sent more than once, with how many
// times: what a destination without idempotency keys would show twice.
func (f *Fake) Repeats() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for k, n := range f.sends {
		if n > 1 && k != "" {
			out[k] = n
		}
	}
	return out
}

// MediaBytes is what Send read from the media of the message it gave id.
func (f *Fake) MediaBytes(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.media[id]
}

// Sent returns everything sent so far, in order (idempotent repeats once).
func (f *Fake) Sent() []bridge.Outgoing {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]bridge.Outgoing(nil), f.sent...)
}

// WaitSent waits until at least n events were sent and returns them all.
func (f *Fake) WaitSent(t testing.TB, n int) []bridge.Outgoing {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if s := f.Sent(); len(s) >= n {
			return s
		}
		select {
		case <-f.notify:
		case <-deadline:
			t.Fatalf("%s: waited 10s for %d sent events, have %d: %+v", f.name, n, len(f.Sent()), f.Sent())
		}
	}
}

// Inject submits ev as if the platform had delivered it, and waits for
// the core to accept it.
func (f *Fake) Inject(ctx context.Context, ev bridge.Event) error {
	f.mu.Lock()
	sink := f.sink
	f.mu.Unlock()
	if sink == nil {
		return fmt.Errorf("%s is not started", f.name)
	}
	return bridge.Accept(ctx, sink, &ev)
}

// Resume calls the sink's Resume, as a connector does on reconnecting.
func (f *Fake) Resume(chat string) {
	f.mu.Lock()
	sink := f.sink
	f.mu.Unlock()
	sink.Resume(chat)
}

// SetMedia makes OpenMedia return content for ref.
func (f *Fake) SetMedia(ref, content string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.media["ref:"+ref] = content
}

// OpenMedia implements bridge.MediaOpener.
func (f *Fake) OpenMedia(ctx context.Context, m bridge.Media) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.media["ref:"+m.Ref]
	if !ok {
		return nil, bridge.Permanentf("no media %q", m.Ref)
	}
	return io.NopCloser(strings.NewReader(c)), nil
}

// Harness runs a bridge over fakes on a store in a temp dir.
type Harness struct {
	t      testing.TB
	Path   string
	Store  *bridge.Store
	Bridge *bridge.Bridge
	Fakes  map[string]*Fake
	Config *config.Config
	Logs   *Logs // what the bridge logged, across restarts
	// repeatsAllowed: the test injects a fault after which a delivery may
	// rightly be sent again (see AllowRepeats).
	repeatsAllowed bool
}

// AllowRepeats says the test injects a fault after which the core may
// rightly send a delivery again (a send cut off unanswered); otherwise
// the harness fails the test if any fake was sent a delivery twice.
func (h *Harness) AllowRepeats() { h.repeatsAllowed = true }

// checkRepeats fails the test for a delivery sent twice where no fault
// allows it.
func (h *Harness) checkRepeats() {
	if h.repeatsAllowed {
		return
	}
	for name, f := range h.Fakes {
		if r := f.Repeats(); len(r) > 0 {
			h.t.Errorf("%s was sent deliveries more than once with no fault injected: %v", name, r)
		}
	}
}

// Logs keeps what a bridge logs, a line per record, for tests to read.
type Logs struct {
	mu    sync.Mutex
	lines []string
}

// Write implements io.Writer for a slog handler, which writes a record a
// call.
func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// Count is how many lines contain s.
func (l *Logs) Count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// String is every line logged so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// Route is shorthand for a route joining chats given as "connector/chat";
// "connector/*" stands for every chat of the connector (chats: all).
func Route(name string, endpoints ...string) config.Route {
	r := config.Route{Name: name}
	for _, e := range endpoints {
		var c, chat string
		for i := 0; i < len(e); i++ {
			if e[i] == '/' {
				c, chat = e[:i], e[i+1:]
				break
			}
		}
		ep := config.Endpoint{Connector: c, Chat: chat, Direction: config.Both}
		if chat == "*" {
			ep.Chat, ep.Chats = "", config.AllChats
		}
		r.Endpoints = append(r.Endpoints, ep)
	}
	return r
}

// New starts a bridge with fakes joined by routes. Retries are fast
// (10 ms to 100 ms) so failure tests run quickly.
func New(t testing.TB, routes []config.Route, fakes ...*Fake) *Harness {
	t.Helper()
	cfg := config.Defaults()
	cfg.Routes = routes
	cfg.Delivery.RetryMin = 10 * time.Millisecond
	cfg.Delivery.RetryMax = 100 * time.Millisecond
	cfg.Delivery.SendTimeout = 5 * time.Second
	h := &Harness{t: t, Path: filepath.Join(t.TempDir(), "bridge.db"), Fakes: map[string]*Fake{}, Config: &cfg, Logs: &Logs{}}
	for _, f := range fakes {
		h.Fakes[f.name] = f
	}
	h.Start()
	t.Cleanup(func() {
		if err := h.Stop(5 * time.Second); err != nil {
			h.t.Errorf("stop bridge: %v", err)
		}
		h.checkRepeats()
	})
	return h
}

// Start opens the store and starts a bridge on it.
func (h *Harness) Start() {
	h.t.Helper()
	store, err := bridge.OpenStore(h.Path, "normal")
	if err != nil {
		h.t.Fatal(err)
	}
	conns := map[string]bridge.Connector{}
	for n, f := range h.Fakes {
		conns[n] = f
	}
	h.Store = store
	h.Bridge = bridge.New(store, conns, h.Config, slog.New(slog.NewTextHandler(h.Logs, nil)))
	if err := h.Bridge.Start(context.Background()); err != nil {
		h.t.Fatal(err)
	}
}

// Stop stops the bridge within timeout and closes the store; it is a no-op
// when stopped already.
func (h *Harness) Stop(timeout time.Duration) error {
	if h.Bridge == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := h.Bridge.Stop(ctx)
	if cerr := h.Store.Close(); cerr != nil && err == nil {
		err = cerr
	}
	h.Bridge = nil
	return err
}

// Restart stops the bridge and starts a new one on the same database, as
// a daemon restart does.
func (h *Harness) Restart() {
	h.t.Helper()
	if err := h.Stop(5 * time.Second); err != nil {
		h.t.Fatalf("stop bridge: %v", err)
	}
	h.Start()
}

// Inject submits ev from the fake connector named by ev.Chat.Connector.
func (h *Harness) Inject(ev bridge.Event) {
	h.t.Helper()
	f, ok := h.Fakes[ev.Chat.Connector]
	if !ok {
		h.t.Fatalf("no fake connector %q", ev.Chat.Connector)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.Inject(ctx, ev); err != nil {
		h.t.Fatalf("inject %+v: %v", ev, err)
	}
}

// NoDescriptions, embedded in a test's own bridge.Sink, answers
// DescribeChat and DescribeSender as the core does for an origin that
// describes nothing, and ignores DescriptionChanged.
type NoDescriptions struct{}

// DescribeChat implements bridge.Sink.
func (NoDescriptions) DescribeChat(context.Context, bridge.ChatRef) (bridge.ChatDescription, error) {
	return bridge.ChatDescription{}, bridge.ErrNotDescribed
}

// DescribeSender implements bridge.Sink.
func (NoDescriptions) DescribeSender(context.Context, bridge.ChatRef, string) (bridge.SenderDescription, error) {
	return bridge.SenderDescription{}, bridge.ErrNotDescribed
}

// DescriptionChanged implements bridge.Sink.
func (NoDescriptions) DescriptionChanged(string) {}

// CapStore stops the database growing past pages (1: past the pages it
// has) through SQLite's max_page_count on the store's one writing
// connection: writes that need a new page then fail with SQLITE_FULL, as
// on a full disk, with no root or filesystem to fill. A large cap lifts it.
func CapStore(t testing.TB, s *bridge.Store, pages int64) {
	t.Helper()
	err := s.Write(context.Background(), func(tx *bridge.Tx) error {
		_, err := tx.Exec(fmt.Sprintf("PRAGMA max_page_count = %d", pages))
		return err
	})
	if err != nil {
		t.Fatalf("cap the store at %d pages: %v", pages, err)
	}
}
