package matrix

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/bridgetest"
)

// botWait bounds every wait on a condition in this package's bot tests.
const botWait = 20 * time.Second

// fakeHS is a scripted homeserver: enough of the client-server API for a
// bot to log in, sync and send, with a hook deciding each send's answer.
type fakeHS struct {
	t   *testing.T
	srv *httptest.Server

	mu     sync.Mutex
	joined []string
	// joinAnswer, if set, answers a join of a room (status 0: join it).
	joinAnswer func(room string) (status int, body string)
	// answer decides the response to a send or redaction (nil: accept it).
	answer func(r *fakeRequest) (status int, body string)
	sent   []fakeRequest
	// history is what /messages returns, newest first; lagging events
	// join it one /messages request late (a homeserver catching up).
	history []map[string]any
	lagging []map[string]any
	// media is the content repository, by media id; an old homeserver
	// serves it only under /_matrix/media/v3.
	media map[string]fakeMedia
	// syncAnswer, if set, answers /sync (status 0: the idle default).
	syncAnswer func(since string) (status int, body string)
	syncs      []url.Values
	searches   int // /messages requests
}

type fakeRequest struct {
	Method, Path, Room, Txn string
	Body                    map[string]any
	At                      time.Time
}

const fakeUser = "@bot:example.org"

func newFakeHS(t *testing.T) *fakeHS {
	f := &fakeHS{t: t, media: map[string]fakeMedia{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeHS) serve(w http.ResponseWriter, r *http.Request) {
	if f.serveMedia(w, r) {
		return
	}
	p := strings.TrimPrefix(r.URL.Path, "/_matrix/client/v3/")
	parts := strings.Split(p, "/")
	reply := func(status int, body string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
	switch {
	case p == "account/whoami":
		reply(200, `{"user_id":"`+fakeUser+`","device_id":"DEV"}`)
	case len(parts) == 2 && parts[0] == "join" && r.Method == http.MethodPost:
		room, _ := url.PathUnescape(parts[1])
		f.mu.Lock()
		answer := f.joinAnswer
		f.mu.Unlock()
		if answer != nil {
			if status, body := answer(room); status != 0 {
				reply(status, body)
				return
			}
		}
		f.mu.Lock()
		f.joined = append(f.joined, room)
		f.mu.Unlock()
		reply(200, `{"room_id":"`+room+`"}`)
	case p == "joined_rooms":
		f.mu.Lock()
		js, _ := json.Marshal(map[string]any{"joined_rooms": append([]string{}, f.joined...)})
		f.mu.Unlock()
		reply(200, string(js))
	case p == "sync":
		q := r.URL.Query()
		since := q.Get("since")
		f.mu.Lock()
		f.syncs = append(f.syncs, q)
		answer := f.syncAnswer
		f.mu.Unlock()
		if answer != nil {
			if status, body := answer(since); status != 0 {
				reply(status, body)
				return
			}
		}
		if since != "" {
			// An idle long poll: nothing happens until the timeout.
			ms, _ := strconv.Atoi(q.Get("timeout"))
			select {
			case <-r.Context().Done():
				return
			case <-time.After(time.Duration(ms) * time.Millisecond):
			}
		}
		if since == "" {
			since = "s1"
		}
		reply(200, `{"next_batch":"`+since+`"}`)
	case len(parts) >= 3 && parts[0] == "rooms" && parts[2] == "messages":
		f.mu.Lock()
		f.searches++
		js, _ := json.Marshal(map[string]any{"chunk": f.history, "start": "x", "end": ""})
		f.history = append(f.lagging, f.history...)
		f.lagging = nil
		f.mu.Unlock()
		reply(200, string(js))
	case len(parts) == 5 && parts[0] == "rooms" && parts[2] == "send",
		len(parts) == 5 && parts[0] == "rooms" && parts[2] == "redact":
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		req := fakeRequest{Method: r.Method, Path: p, Room: parts[1], Txn: parts[4], Body: body, At: time.Now()}
		f.mu.Lock()
		f.sent = append(f.sent, req)
		answer := f.answer
		f.mu.Unlock()
		if answer != nil {
			if status, body := answer(&req); status != 0 {
				reply(status, body)
				return
			}
		}
		reply(200, `{"event_id":"$`+req.Txn+`"}`)
	default:
		reply(404, `{"errcode":"M_UNRECOGNIZED","error":"not in this fake"}`)
	}
}

func (f *fakeHS) setAnswer(fn func(r *fakeRequest) (int, string)) {
	f.mu.Lock()
	f.answer = fn
	f.mu.Unlock()
}

func (f *fakeHS) requests() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeRequest(nil), f.sent...)
}

// keyedPaths is the paths of the requests made, checking that each
// carries its transaction id as the delivery key.
func (f *fakeHS) keyedPaths(t *testing.T) ([]fakeRequest, []string) {
	t.Helper()
	reqs := f.requests()
	paths := make([]string, len(reqs))
	for i, r := range reqs {
		paths[i] = r.Path
		if r.Body[keyField] != r.Txn {
			t.Errorf("%s carries key %v, want its transaction id", r.Path, r.Body[keyField])
		}
	}
	return reqs, paths
}

func (f *fakeHS) client(t *testing.T) *mautrix.Client {
	cli, err := mautrix.NewClient(f.srv.URL, fakeUser, "token")
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// recordingSink is a Sink that keeps what it is told.
type recordingSink struct {
	bridgetest.NoDescriptions
	mu        sync.Mutex
	notices   []string
	states    []string
	submitted []*bridge.Event
	// refuse, if set, is the outcome of each Submit.
	refuse func(ev *bridge.Event) error
}

func (s *recordingSink) Submit(ev *bridge.Event, done func(error)) {
	s.mu.Lock()
	s.submitted = append(s.submitted, ev)
	refuse := s.refuse
	s.mu.Unlock()
	if refuse != nil {
		done(refuse(ev))
		return
	}
	done(nil)
}

func (s *recordingSink) events() []*bridge.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*bridge.Event(nil), s.submitted...)
}
func (s *recordingSink) Resume(string) {}
func (s *recordingSink) SetState(st bridge.State, detail string) {
	s.mu.Lock()
	s.states = append(s.states, string(st)+": "+detail)
	s.mu.Unlock()
}
func (s *recordingSink) Notice(text string) {
	s.mu.Lock()
	s.notices = append(s.notices, text)
	s.mu.Unlock()
}
func (s *recordingSink) ChatsChanged() {}

func (s *recordingSink) noticeList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.notices...)
}

// newFakeBot builds a bot-mode connector for f, not started.
func newFakeBot(t *testing.T, f *fakeHS) *Connector {
	t.Helper()
	store, err := bridge.OpenStore(filepath.Join(t.TempDir(), "bridge.db"), "normal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	o := NewOptions()
	o.Mode, o.Homeserver, o.Domain, o.UserID, o.AccessToken = ModeBot, f.srv.URL, "example.org", fakeUser, "token"
	o.SyncTimeout = time.Second
	c, err := New(bridge.Env{Name: "mx", Logger: slog.New(slog.DiscardHandler), Store: store}, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startFakeBot starts a bot-mode connector on f with a recording sink.
func startFakeBot(t *testing.T, f *fakeHS) (*Connector, *recordingSink) {
	t.Helper()
	return startFakeBotWith(t, f, &recordingSink{})
}

func startFakeBotWith(t *testing.T, f *fakeHS, sink *recordingSink) (*Connector, *recordingSink) {
	t.Helper()
	c := newFakeBot(t, f)
	if err := c.Start(t.Context(), sink); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), botWait)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	waitFor(t, "the bot to log in", func() bool { return c.client() != nil })
	return c, sink
}

// waitFor polls cond until it holds, failing the test after botWait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(botWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", botWait, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func TestSendUsesTheKeyAsTransactionID(t *testing.T) {
	f := newFakeHS(t)
	s := &roomSender{cli: f.client(t), room: "!r:example.org", self: fakeUser, senderFormat: DefaultSenderFormat, maxMediaBytes: 1 << 20}
	ctx := t.Context()
	steps := []*bridge.Outgoing{
		outgoing("hello", func(o *bridge.Outgoing) { o.Key = "pb.1"; o.ReplyTo = "$q" }),
		outgoing("hello2", func(o *bridge.Outgoing) { o.Key, o.Kind, o.Target = "pb.2", bridge.KindEdit, "$pb.1" }),
		outgoing("", func(o *bridge.Outgoing) {
			o.Key, o.Kind, o.Target, o.Emoji = "pb.3", bridge.KindReaction, "$pb.1", "👍"
		}),
		outgoing("", func(o *bridge.Outgoing) {
			o.Key, o.Kind, o.Target, o.TargetReaction = "pb.4", bridge.KindReactionRemove, "$pb.1", "$pb.3"
		}),
		outgoing("", func(o *bridge.Outgoing) { o.Key, o.Kind, o.Target = "pb.5", bridge.KindDelete, "$pb.1" }),
		outgoing("", func(o *bridge.Outgoing) { o.Key, o.Kind, o.Target = "pb.6", bridge.KindReactionRemove, "$pb.1" }),
	}
	var ids []string
	for _, out := range steps {
		native, err := s.send(ctx, out)
		if err != nil {
			t.Fatalf("send %s: %v", out.Kind, err)
		}
		ids = append(ids, native)
	}
	want := []string{"$pb.1", "$pb.2", "$pb.3", "$pb.4", "$pb.5", ""}
	if fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Errorf("native ids %v, want %v (a removal of an unknown reaction sends nothing)", ids, want)
	}
	_, paths := f.keyedPaths(t)
	wantPaths := []string{
		"rooms/!r:example.org/send/m.room.message/pb.1",
		"rooms/!r:example.org/send/m.room.message/pb.2",
		"rooms/!r:example.org/send/m.reaction/pb.3",
		"rooms/!r:example.org/redact/$pb.3/pb.4",
		"rooms/!r:example.org/redact/$pb.1/pb.5",
	}
	if fmt.Sprint(paths) != fmt.Sprint(wantPaths) {
		t.Errorf("requests\n%v\nwant\n%v", paths, wantPaths)
	}
}

func TestRetryFindsWhatAnUnansweredSendCreated(t *testing.T) {
	f := newFakeHS(t)
	s := &roomSender{cli: f.client(t), room: "!r:example.org", self: fakeUser, guard: newTxnGuard(), senderFormat: DefaultSenderFormat}
	// The homeserver stores the event, then fails before answering (it
	// was killed), and forgets the transaction id when it comes back.
	f.setAnswer(func(r *fakeRequest) (int, string) {
		f.history = append([]map[string]any{{"type": "m.room.message", "event_id": "$stored", "sender": fakeUser,
			"content": r.Body}}, f.history...)
		return 502, `{"errcode":"M_UNKNOWN","error":"bad gateway"}`
	})
	out := outgoing("once", func(o *bridge.Outgoing) { o.Key = "pb.9" })
	if _, err := s.send(t.Context(), out); err == nil || bridge.IsPermanent(err) {
		t.Fatalf("first attempt: %v, want a transient error", err)
	}
	f.setAnswer(nil)
	native, err := s.send(t.Context(), out)
	if err != nil || native != "$stored" {
		t.Fatalf("retry: %q, %v; want the stored event's id", native, err)
	}
	if n := len(f.requests()); n != 1 {
		t.Errorf("%d sends reached the homeserver, want 1: the retry must not send again", n)
	}
	// An event stored but shown only later is still found, not resent.
	f.setAnswer(func(r *fakeRequest) (int, string) {
		f.lagging = append(f.lagging, map[string]any{"type": "m.room.message", "event_id": "$late", "sender": fakeUser, "content": r.Body})
		return 502, `{}`
	})
	late := outgoing("late", func(o *bridge.Outgoing) { o.Key = "pb.11" })
	s.send(t.Context(), late)
	f.setAnswer(nil)
	if native, err := s.send(t.Context(), late); err != nil || native != "$late" {
		t.Errorf("retry of a send the homeserver shows late: %q, %v; want $late", native, err)
	}
	if n := len(f.requests()); n != 2 {
		t.Errorf("%d sends reached the homeserver, want 2 (once, and once for the late one)", n)
	}

	// An event that did not arrive is sent on retry, after the search
	// settles.
	s.guard.settle = 3 * settleStep
	f.setAnswer(func(*fakeRequest) (int, string) { return 502, `{}` })
	other := outgoing("lost", func(o *bridge.Outgoing) { o.Key = "pb.10" })
	s.send(t.Context(), other)
	f.setAnswer(nil)
	if native, err := s.send(t.Context(), other); err != nil || native != "$pb.10" {
		t.Errorf("retry of a lost send: %q, %v; want it sent", native, err)
	}
}

// TestMaybeSentIsSearchedForOnce: after the bridge was killed, deliveries
// the core flags MaybeSent are looked for in the room; the first one not
// found ends the searching in that room, as none after it was attempted.
func TestMaybeSentIsSearchedForOnce(t *testing.T) {
	f := newFakeHS(t)
	s := &roomSender{cli: f.client(t), room: "!r:example.org", self: fakeUser, guard: newTxnGuard(), senderFormat: DefaultSenderFormat}
	f.history = []map[string]any{{"type": "m.room.message", "event_id": "$before", "sender": fakeUser,
		"content": map[string]any{"msgtype": "m.text", "body": "Ann: again", keyField: "pb.20"}}}
	flagged := func(text, key string) *bridge.Outgoing {
		return outgoing(text, func(o *bridge.Outgoing) { o.Key, o.MaybeSent = key, true })
	}
	if native, err := s.send(t.Context(), flagged("again", "pb.20")); err != nil || native != "$before" {
		t.Fatalf("a delivery made before the kill: %q, %v; want the event it made", native, err)
	}
	for _, key := range []string{"pb.21", "pb.22", "pb.23"} {
		if native, err := s.send(t.Context(), flagged("new", key)); err != nil || native != "$"+key {
			t.Errorf("a delivery never made: %q, %v; want it sent", native, err)
		}
	}
	f.mu.Lock()
	searches := f.searches
	f.mu.Unlock()
	if n := len(f.requests()); n != 3 || searches != 2 {
		t.Errorf("%d sends and %d searches, want 3 sends and 2 searches (pb.20 found, pb.21 not, then none)", n, searches)
	}
}
