package irc

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/connectors/irc/ircconn"
	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

// fakeClient is an ircClient that records what the connector sends and
// lets the test play the server through the handler.
type fakeClient struct {
	h ircconn.Handler

	mu     sync.Mutex
	nick   string
	prefix string
	sent   []*ircmsg.Message
	joins  []string
	parts  []string
	joined []string
	sends  int
	// batches are the sizes of the SendBatch calls.
	batches []int
	// fail, if set, may fail the n-th Send (counting from 1) with an error.
	fail func(n int, m *ircmsg.Message) error
	// autoJoin: the server lets it in at once (puppets): its channels
	// are joined when it runs, and Join joins.
	autoJoin bool
	// refuseJoins: the server answers joins with 474 (banned).
	refuseJoins bool
	initial     []string
	stopped     chan struct{}
	// disconnected: the connection is down (State says so).
	disconnected bool
}

func (f *fakeClient) State() ircconn.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.disconnected {
		return ircconn.StateDisconnected
	}
	return ircconn.StateRegistered
}

func (f *fakeClient) Run(ctx context.Context) error {
	if f.autoJoin {
		f.h.State(ircconn.StateRegistered, "registered")
		for _, ch := range f.initial {
			f.Join(ch, "")
		}
	}
	<-ctx.Done()
	close(f.stopped)
	return nil
}

func (f *fakeClient) Send(ctx context.Context, m *ircmsg.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sends++
	if f.fail != nil {
		if err := f.fail(f.sends, m); err != nil {
			return err
		}
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ircconn.ErrInvalidLine, err)
	}
	f.sent = append(f.sent, m)
	return nil
}

// SendBatch is Send line by line: the lines before a failing one count.
func (f *fakeClient) SendBatch(ctx context.Context, msgs []*ircmsg.Message) (int, error) {
	f.mu.Lock()
	f.batches = append(f.batches, len(msgs))
	f.mu.Unlock()
	for i, m := range msgs {
		if err := f.Send(ctx, m); err != nil {
			return i, err
		}
	}
	return len(msgs), nil
}

func (f *fakeClient) Nick() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nick
}

func (f *fakeClient) Prefix() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.prefix
}

func (f *fakeClient) Join(channel, key string) {
	f.mu.Lock()
	f.joins = append(f.joins, channel+" "+key)
	auto, refuse := f.autoJoin, f.refuseJoins
	if auto && !refuse {
		f.joined = append(f.joined, channel)
	}
	f.mu.Unlock()
	switch {
	case auto && refuse:
		f.h.Message(&ircmsg.Message{Source: "irc.example.org", Command: "474", Params: []string{f.Nick(), channel, "Cannot join channel (+b)"}})
	case auto:
		f.h.Message(&ircmsg.Message{Source: f.Nick() + "!~p@h", Command: "JOIN", Params: []string{channel}})
	}
}

func (f *fakeClient) Part(channel, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.parts = append(f.parts, channel)
}

func (f *fakeClient) Channels() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.joined)
}

// Fold is rfc1459's, the protocol's default.
func (f *fakeClient) Fold(name string) string {
	return strings.NewReplacer("[", "{", "]", "}", "\\", "|", "~", "^").Replace(strings.ToLower(name))
}

// lines returns the bodies of what was sent, "COMMAND target body".
func (f *fakeClient) lines() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, m := range f.sent {
		out = append(out, m.Command+" "+strings.Join(m.Params, " "))
	}
	return out
}

// server plays a line from the server to the handler.
func (f *fakeClient) server(t *testing.T, line string) {
	t.Helper()
	m, err := ircmsg.Parse(line)
	if err != nil {
		t.Fatalf("test line %q: %v", line, err)
	}
	// The channel set, as ircconn keeps it before the handler hears.
	self := f.Fold(m.Nick()) == f.Fold(f.Nick())
	f.mu.Lock()
	switch {
	case m.Command == "JOIN" && self:
		f.joined = append(f.joined, m.Param(0))
	case m.Command == "PART" && self, m.Command == "KICK" && f.Fold(m.Param(1)) == f.Fold(f.nick):
		f.joined = slices.DeleteFunc(f.joined, func(ch string) bool { return f.Fold(ch) == f.Fold(m.Param(0)) })
	}
	f.mu.Unlock()
	f.h.Message(m)
}

// recordingSink is a bridge.Sink that records what it is given. The
// embedded Sink (nil) stands for methods the connector does not call.
type recordingSink struct {
	bridge.Sink
	mu      sync.Mutex
	events  []*bridge.Event
	resumed []string
	states  []bridge.State
	notices []string
}

func (s *recordingSink) Submit(ev *bridge.Event, done func(error)) {
	s.mu.Lock()
	s.events = append(s.events, ev)
	s.mu.Unlock()
	done(nil)
}

func (s *recordingSink) Resume(chat string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resumed = append(s.resumed, chat)
}

func (s *recordingSink) SetState(state bridge.State, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states = append(s.states, state)
}

func (s *recordingSink) Notice(text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notices = append(s.notices, text)
}

func (s *recordingSink) ChatsChanged() {}

func (s *recordingSink) take() []*bridge.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	ev := s.events
	s.events = nil
	return ev
}

// rig is a connector on a fake client, registered and in #chan.
type rig struct {
	c   *Connector
	cli *fakeClient
	// puppets are the clients made after the bot's, in order.
	puppetsMu sync.Mutex
	puppets   []*fakeClient
	// puppetTune, if set, sets up each puppet's fake before it runs.
	puppetTune func(*fakeClient)
	sink       *recordingSink
	store      *bridge.Store
}

func openStore(t *testing.T, dir string) *bridge.Store {
	t.Helper()
	store, err := bridge.OpenStore(filepath.Join(dir, "bridge.db"), "normal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// newRig starts a connector with options tuned by tune on store (a new
// one when nil), routed to #chan and registered as "bridge"; media is
// the media server, if any.
func newRig(t *testing.T, store *bridge.Store, tune func(o *Options), media ...bridge.MediaPublisher) *rig {
	t.Helper()
	if store == nil {
		store = openStore(t, t.TempDir())
	}
	o := NewOptions()
	o.Server = "irc.example.org:6697"
	o.Nick = "bridge"
	if tune != nil {
		tune(o)
	}
	env := bridge.Env{Name: "irc", Logger: slog.New(slog.DiscardHandler), Store: store}
	if len(media) > 0 {
		env.Media = media[0]
	}
	c, err := New(env, o)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{c: c, sink: &recordingSink{}, store: store}
	c.newClient = func(cfg clientConfig, h ircconn.Handler) (ircClient, error) {
		f := &fakeClient{h: h, nick: cfg.nick, prefix: cfg.nick + "!~" + cfg.nick + "@example.org", stopped: make(chan struct{})}
		if !cfg.puppet {
			r.cli = f
			return f, nil
		}
		f.autoJoin = true
		for ch := range cfg.channels {
			f.initial = append(f.initial, ch)
		}
		if r.puppetTune != nil {
			r.puppetTune(f)
		}
		r.puppetsMu.Lock()
		r.puppets = append(r.puppets, f)
		r.puppetsMu.Unlock()
		return f, nil
	}
	c.RoutedChats([]string{"#chan", "alice"})
	if err := c.Start(t.Context(), r.sink); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	r.cli.h.State(ircconn.StateRegistered, "registered")
	r.cli.server(t, ":bridge!~bridge@example.org JOIN #chan")
	return r
}

// flush waits until every write queued so far is committed.
func (r *rig) flush(t *testing.T) {
	t.Helper()
	if err := r.store.Write(t.Context(), func(*bridge.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

func message(key, chat, name, text string) *bridge.Outgoing {
	return &bridge.Outgoing{
		Key: key,
		Event: bridge.Event{
			Kind:   bridge.KindMessage,
			Chat:   bridge.ChatRef{Connector: "irc", ID: chat},
			Sender: bridge.Sender{ID: name, Name: name},
			Text:   text,
			Origin: bridge.ChatRef{Connector: "phone", ID: "123@s.whatsapp.net"},
		},
	}
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }
