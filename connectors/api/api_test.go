package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/bridgetest"
	"github.com/phonebridge/phonebridge/config"
)

const testToken = "test-token-0123456789abcdef"

// fakeSink commits through the store's writer like the core does, so
// done runs on the writer goroutine, after the commit.
type fakeSink struct {
	bridgetest.NoDescriptions
	store   *bridge.Store
	noRoute string

	mu      sync.Mutex
	events  []bridge.Event
	resumed []string
	states  []bridge.State
}

func (s *fakeSink) Submit(ev *bridge.Event, done func(error)) {
	if ev.Chat.ID == s.noRoute {
		done(fmt.Errorf("%w: %q", bridge.ErrNoRoute, ev.Chat.ID))
		return
	}
	cp := *ev
	s.store.WriteAsync(func(*bridge.Tx) error { return nil }, func(err error) {
		if err == nil {
			s.mu.Lock()
			s.events = append(s.events, cp)
			s.mu.Unlock()
		}
		done(err)
	})
}

func (s *fakeSink) Resume(chat string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resumed = append(s.resumed, chat)
}

func (s *fakeSink) SetState(state bridge.State, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states = append(s.states, state)
}

func (s *fakeSink) Notice(text string) {}
func (s *fakeSink) ChatsChanged()      {}

func (s *fakeSink) got() []bridge.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]bridge.Event(nil), s.events...)
}

// lockedBuffer collects logs so tests can check no secret reaches them.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type harness struct {
	t     *testing.T
	c     *Connector
	sink  *fakeSink
	store *bridge.Store
	dir   string
	logs  *lockedBuffer
	token string
}

func newHarness(t *testing.T, mutate func(*Options)) *harness {
	t.Helper()
	dir := t.TempDir()
	store, err := bridge.OpenStore(filepath.Join(dir, "bridge.db"), "normal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	h := &harness{t: t, store: store, dir: dir, logs: &lockedBuffer{}}
	h.start(mutate)
	return h
}

func (h *harness) start(mutate func(*Options)) {
	t := h.t
	t.Helper()
	opts := NewOptions()
	opts.Listen = "127.0.0.1:0"
	opts.Token = testToken
	if mutate != nil {
		mutate(opts)
	}
	c, err := New(bridge.Env{
		Name:     "chat-api",
		Logger:   slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		StateDir: h.dir,
		Store:    h.store,
	}, opts)
	if err != nil {
		t.Fatal(err)
	}
	h.sink = &fakeSink{store: h.store, noRoute: "nowhere"}
	if err := c.Start(context.Background(), h.sink); err != nil {
		t.Fatal(err)
	}
	h.c = c
	h.token = opts.Token
	if h.token == "" {
		b, err := os.ReadFile(filepath.Join(h.dir, "chat-api.token"))
		if err != nil {
			t.Fatal(err)
		}
		h.token = strings.TrimSpace(string(b))
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
		if strings.Contains(h.logs.String(), h.token) {
			t.Errorf("the token reached the logs:\n%s", h.logs.String())
		}
	})
}

func (h *harness) url(path string) string { return "http://" + h.c.Addr() + path }

// do sends a request and decodes a JSON answer.
func (h *harness) do(method, path, token string, body []byte) (int, http.Header, map[string]any) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.url(path), bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &m); err != nil {
			h.t.Fatalf("%s %s: answer is not JSON: %q", method, path, raw)
		}
	}
	return resp.StatusCode, resp.Header, m
}

func (h *harness) post(body string) (int, map[string]any) {
	h.t.Helper()
	status, _, m := h.do(http.MethodPost, "/v1/events", h.token, []byte(body))
	return status, m
}

// dial connects a websocket client and reads its hello.
func (h *harness) dial() *websocket.Conn {
	h.t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+h.c.Addr()+"/v1/ws?access_token="+url.QueryEscape(h.token), nil)
	if err != nil {
		h.t.Fatalf("dial: %v (%v)", err, resp)
	}
	h.t.Cleanup(func() { ws.Close() })
	hello := readFrame(h.t, ws)
	if hello["type"] != "hello" || hello["version"] != 1.0 || hello["connector"] != "chat-api" {
		h.t.Fatalf("hello = %v", hello)
	}
	return ws
}

func readFrame(t *testing.T, ws *websocket.Conn) map[string]any {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("frame is not JSON: %q", data)
	}
	return m
}

func writeFrame(t *testing.T, ws *websocket.Conn, v any) {
	t.Helper()
	if err := ws.WriteJSON(v); err != nil {
		t.Fatalf("write frame: %v", err)
	}
}

func subscribe(t *testing.T, ws *websocket.Conn, chat string, since *int64) map[string]any {
	t.Helper()
	f := map[string]any{"type": "subscribe", "chat": chat}
	if since != nil {
		f["since"] = *since
	}
	writeFrame(t, ws, f)
	m := readFrame(t, ws)
	if m["type"] != "subscribed" || m["chat"] != chat {
		t.Fatalf("subscribe answer = %v", m)
	}
	return m
}

// send delivers an outgoing message like the core does.
func (h *harness) send(chat, key, text string) string {
	h.t.Helper()
	id, err := h.c.Send(context.Background(), &bridge.Outgoing{
		Event: bridge.Event{
			Kind:   bridge.KindMessage,
			Chat:   bridge.ChatRef{Connector: "chat-api", ID: chat, Name: "General"},
			Sender: bridge.Sender{ID: "alice@wa", Name: "Alice"},
			Time:   time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC),
			Text:   text,
			Origin: bridge.ChatRef{Connector: "wa", ID: "123@g.us", Name: "Family"},
		},
		Key: key,
	})
	if err != nil {
		h.t.Fatalf("Send: %v", err)
	}
	return id
}

// flush waits until every write queued so far is committed and its
// callbacks have run.
func (h *harness) flush() {
	h.t.Helper()
	if err := h.store.Write(context.Background(), func(*bridge.Tx) error { return nil }); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) logged(chat string) int {
	h.t.Helper()
	h.flush()
	var n int
	if err := h.store.DB().QueryRow(`SELECT COUNT(*) FROM api_events WHERE connector = 'chat-api' AND chat = ?`, chat).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

func expectEvent(t *testing.T, ws *websocket.Conn, chat string, seq int64, text string) map[string]any {
	t.Helper()
	m := readFrame(t, ws)
	ev, _ := m["event"].(map[string]any)
	if m["type"] != "event" || m["chat"] != chat || m["seq"] != float64(seq) || ev == nil || ev["text"] != text {
		t.Fatalf("want event seq %d %q in %s, got %v", seq, text, chat, m)
	}
	return ev
}

func TestHealthNeedsNoToken(t *testing.T) {
	h := newHarness(t, nil)
	status, _, m := h.do(http.MethodGet, "/v1/health", "", nil)
	if status != 200 || m["status"] != "ok" {
		t.Fatalf("health = %d %v", status, m)
	}
}

func TestUnauthorized(t *testing.T) {
	h := newHarness(t, nil)
	for _, token := range []string{"", "wrong-token-0123456789"} {
		for _, path := range []string{"/v1/events", "/v1/media/" + strings.Repeat("a", 64), "/v1/ws"} {
			method := http.MethodGet
			if path == "/v1/events" {
				method = http.MethodPost
			}
			status, hdr, m := h.do(method, path, token, []byte(`{}`))
			if status != http.StatusUnauthorized || hdr.Get("WWW-Authenticate") != "Bearer" || m["code"] != "unauthorized" {
				t.Errorf("%s %s with token %q: %d %v %v", method, path, token, status, hdr, m)
			}
		}
		_, resp, err := websocket.DefaultDialer.Dial("ws://"+h.c.Addr()+"/v1/ws?access_token="+token, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("websocket with token %q: %v %v", token, err, resp)
		}
	}
	// The header works for websockets too.
	hdr := http.Header{"Authorization": {"Bearer " + testToken}}
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+h.c.Addr()+"/v1/ws", hdr)
	if err != nil {
		t.Fatal(err)
	}
	ws.Close()
}

func TestNotFoundAndMethod(t *testing.T) {
	h := newHarness(t, nil)
	if status, _, m := h.do(http.MethodGet, "/v2/nothing", h.token, nil); status != 404 || m["code"] != "not_found" {
		t.Errorf("unknown path: %d %v", status, m)
	}
	if status, hdr, m := h.do(http.MethodGet, "/v1/events", h.token, nil); status != 405 || hdr.Get("Allow") != "POST" || m["code"] != "method_not_allowed" {
		t.Errorf("GET /v1/events: %d %v %v", status, hdr, m)
	}
	if status, _, m := h.do(http.MethodGet, "/v1/media/"+strings.Repeat("b", 64), h.token, nil); status != 404 || m["code"] != "not_found" {
		t.Errorf("missing media: %d %v", status, m)
	}
	if status, _, m := h.do(http.MethodGet, "/v1/media/..%2f..%2fbridge.db", h.token, nil); status != 404 {
		t.Errorf("media path traversal: %d %v", status, m)
	}
}

func TestPostTooLarge(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.MaxMessageBytes = 1024 })
	big := `{"kind":"message","chat":"general","text":"` + strings.Repeat("x", 2000) + `"}`
	status, m := h.post(big)
	if status != http.StatusRequestEntityTooLarge || m["code"] != "too_large" || !strings.Contains(m["error"].(string), "max_message_bytes") {
		t.Fatalf("oversized body: %d %v", status, m)
	}
	// Without a Content-Length the limit holds while reading.
	req, _ := http.NewRequest(http.MethodPost, h.url("/v1/events"), io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+h.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked oversized body: %d", resp.StatusCode)
	}
	if len(h.sink.got()) != 0 {
		t.Fatal("an oversized event reached the core")
	}
}

func TestPostBadRequests(t *testing.T) {
	h := newHarness(t, nil)
	cases := []struct{ body, want string }{
		{`{"kind":"message","chat":"general","text":"hi"`, "malformed JSON"},
		{`{"kind":"message",,}`, "malformed JSON at byte"},
		{``, "body is empty"},
		{`[1,2]`, "must be a JSON object"},
		{`{"kind":"message","chat":"general","text":"hi","colour":"red"}`, `unknown field "colour"`},
		{`{"kind":"message","chat":"general","text":"hi","origin":{}}`, `unknown field "origin"`},
		{`{"kind":"message","chat":"general","text":"hi","history":true}`, `unknown field "history"`},
		{`{"kind":"message","chat":"general","text":5}`, "field text must be a string"},
		{`{"kind":"message","chat":"general","sender":{"is_owner":"yes"}}`, "sender.is_owner must be true or false"},
		{`{"id":"pb.123","kind":"message","chat":"general","text":"hi"}`, `reserved for ids the bridge assigns`},
		{`{"chat":"general","text":"hi"}`, "kind is required"},
		{`{"kind":"shout","chat":"general","text":"hi"}`, `kind "shout" is not one of`},
		{`{"kind":"message","text":"hi"}`, "chat is empty"},
		{`{"kind":"message","chat":"general"}`, "needs text, media, a location or a poll"},
		{`{"kind":"edit","chat":"general","text":"x"}`, "needs a target"},
		{`{"kind":"reaction","chat":"general","target":"m1"}`, "needs an emoji"},
		{`{"kind":"message","chat":"general","text":"hi","time":"yesterday"}`, "not RFC 3339"},
		{`{"kind":"message","chat":"general","media":[{"mime":"image/png"}]}`, "media[0].data is required"},
		{`{"kind":"message","chat":"general","media":[{"data":"%%%"}]}`, "media[0].data is not valid base64"},
		{`{"kind":"message","chat":"general","media":[{"url":"/v1/media/x"}]}`, `unknown field "url"`},
		{`{"kind":"message","chat":"general","text":"a"} {"kind":"message"}`, "data after its JSON object"},
	}
	for _, tc := range cases {
		status, m := h.post(tc.body)
		msg, _ := m["error"].(string)
		if status != http.StatusBadRequest || m["code"] != "bad_request" || !strings.Contains(msg, tc.want) {
			t.Errorf("POST %s: %d %v; want 400 mentioning %q", tc.body, status, m, tc.want)
		}
	}
	if n := len(h.sink.got()); n != 0 {
		t.Fatalf("%d invalid events reached the core", n)
	}
}

func TestPostNoRoute(t *testing.T) {
	h := newHarness(t, nil)
	status, m := h.post(`{"kind":"message","chat":"nowhere","text":"hi"}`)
	if status != http.StatusNotFound || m["code"] != "no_route" || !strings.Contains(m["error"].(string), "nowhere") {
		t.Fatalf("no route: %d %v", status, m)
	}
}

func TestPostAccepted(t *testing.T) {
	h := newHarness(t, nil)
	status, m := h.post(`{"id":"m1","kind":"message","chat":"general","chat_name":"General",
		"sender":{"id":"bot","name":"Bot","is_owner":true},"time":"2024-05-01T12:00:00Z",
		"text":"hello","html":"<b>hello</b>","emote":true,"notice":true,"reply_to":"m0"}`)
	if status != http.StatusAccepted || m["id"] != "m1" {
		t.Fatalf("POST: %d %v", status, m)
	}
	got := h.sink.got()
	want := bridge.Event{
		Kind: bridge.KindMessage, ID: "m1",
		Chat:   bridge.ChatRef{Connector: "chat-api", ID: "general", Name: "General"},
		Sender: bridge.Sender{ID: "bot", Name: "Bot", IsOwner: true},
		Time:   time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC),
		Text:   "hello", HTML: "<b>hello</b>", Emote: true, Notice: true, ReplyTo: "m0",
	}
	if len(got) != 1 || !got[0].Time.Equal(want.Time) {
		t.Fatalf("sink got %+v", got)
	}
	got[0].Time = want.Time
	if fmt.Sprintf("%+v", got[0]) != fmt.Sprintf("%+v", want) {
		t.Fatalf("sink got\n%+v\nwant\n%+v", got[0], want)
	}

	// Without an id one is generated (and the time defaults to now).
	status, m = h.post(`{"kind":"reaction","chat":"general","target":"m1","emoji":"👍"}`)
	id, _ := m["id"].(string)
	if status != http.StatusAccepted || len(id) != 32 {
		t.Fatalf("POST without id: %d %v", status, m)
	}
	got = h.sink.got()
	if len(got) != 2 || got[1].ID != id || got[1].Emoji != "👍" || time.Since(got[1].Time) > time.Minute {
		t.Fatalf("sink got %+v", got[1:])
	}
}

func TestWSFrameTooLarge(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.MaxMessageBytes = 1024 })
	ws := h.dial()
	writeFrame(t, ws, map[string]any{"type": "ping", "ref": strings.Repeat("x", 2000)})
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig || !strings.Contains(ce.Text, "max_message_bytes") {
		t.Fatalf("oversized frame: %v", err)
	}
}

func TestWSBadFramesKeepConnection(t *testing.T) {
	h := newHarness(t, nil)
	ws := h.dial()
	for _, tc := range []struct {
		frame string
		want  string
	}{
		{`{"type":"send"`, "malformed JSON"},
		{`{"type":"dance","ref":"r1"}`, `type "dance" is not one of`},
		{`{"ref":"r2"}`, "type is required"},
		{`{"type":"subscribe","colour":"red"}`, `unknown field "colour"`},
		{`{"type":"subscribe"}`, "chat is required"},
		{`{"type":"send","ref":"r3"}`, "event is required"},
		{`{"type":"send","ref":"r4","event":{"kind":"message","chat":"general","txt":"x"}}`, `unknown field "txt"`},
		{`{"type":"send","ref":"r5","event":{"kind":"message","chat":"nowhere","text":"x"}}`, "no route"},
	} {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(tc.frame)); err != nil {
			t.Fatal(err)
		}
		m := readFrame(t, ws)
		if m["type"] != "error" || !strings.Contains(m["error"].(string), tc.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", tc.frame, m, tc.want)
		}
	}
	writeFrame(t, ws, map[string]any{"type": "ping", "ref": "still-here"})
	if m := readFrame(t, ws); m["type"] != "pong" || m["ref"] != "still-here" {
		t.Fatalf("after errors: %v", m)
	}
}

func TestWSPipelinedSendsAckInOrder(t *testing.T) {
	h := newHarness(t, nil)
	ws := h.dial()
	const n = 3000
	go func() {
		for i := range n {
			ev := map[string]any{"id": fmt.Sprintf("e%d", i), "kind": "message", "chat": "general", "text": fmt.Sprint(i)}
			switch {
			case i%500 == 7:
				ev["chat"] = "nowhere" // refused by the core
			case i%300 == 11:
				delete(ev, "text") // refused here
			case i%200 == 13:
				ev["kind"] = "typing" // acknowledged at once by the core
			}
			if err := ws.WriteJSON(map[string]any{"type": "send", "ref": fmt.Sprint(i), "event": ev}); err != nil {
				return
			}
		}
	}()
	for i := range n {
		m := readFrame(t, ws)
		if m["ref"] != fmt.Sprint(i) {
			t.Fatalf("reply %d has ref %v: %v", i, m["ref"], m)
		}
		wantType := "ack"
		if i%500 == 7 || i%300 == 11 {
			wantType = "error"
		}
		if m["type"] != wantType || (wantType == "ack" && m["id"] != fmt.Sprintf("e%d", i)) {
			t.Fatalf("reply %d: %v", i, m)
		}
	}
	got := h.sink.got()
	last := -1
	for _, ev := range got {
		var i int
		fmt.Sscanf(ev.ID, "e%d", &i)
		if i <= last {
			t.Fatalf("events reached the core out of order: %d after %d", i, last)
		}
		last = i
	}
}

func TestSendBroadcastOnce(t *testing.T) {
	h := newHarness(t, nil)
	ws := h.dial()
	if m := subscribe(t, ws, "general", nil); m["seq"] != 0.0 {
		t.Fatalf("subscribed to an empty chat: %v", m)
	}
	if id := h.send("general", "pb.k1", "one"); id != "pb.k1" {
		t.Fatalf("native id %q, want the key", id)
	}
	ev := expectEvent(t, ws, "general", 1, "one")
	want := map[string]any{
		"id": "pb.k1", "kind": "message", "chat": "general", "chat_name": "General",
		"sender": map[string]any{"id": "alice@wa", "name": "Alice"},
		"time":   "2024-05-01T12:00:00Z", "text": "one",
		"origin": map[string]any{"connector": "wa", "chat": "123@g.us", "chat_name": "Family"},
	}
	if fmt.Sprint(ev) != fmt.Sprint(want) {
		t.Fatalf("event\n%v\nwant\n%v", ev, want)
	}
	// A redelivery with the same key is neither logged nor shown again.
	h.send("general", "pb.k1", "one")
	h.send("general", "pb.k2", "two")
	expectEvent(t, ws, "general", 2, "two")
	if n := h.logged("general"); n != 2 {
		t.Fatalf("%d events logged, want 2", n)
	}
	// Other chats' events do not reach this subscriber; they do take a
	// seq, which rises across all chats.
	h.send("other", "pb.k3", "elsewhere")
	h.send("general", "pb.k4", "three")
	expectEvent(t, ws, "general", 4, "three")

	// Typing is live only: no seq, not logged.
	if _, err := h.c.Send(context.Background(), &bridge.Outgoing{Event: bridge.Event{Kind: bridge.KindTyping, Chat: bridge.ChatRef{ID: "general"}}}); err != nil {
		t.Fatal(err)
	}
	m := readFrame(t, ws)
	if m["type"] != "event" || m["seq"] != nil || m["event"].(map[string]any)["kind"] != "typing" {
		t.Fatalf("typing frame: %v", m)
	}
	if n := h.logged("general"); n != 3 {
		t.Fatalf("%d events logged after typing, want 3", n)
	}

	writeFrame(t, ws, map[string]any{"type": "unsubscribe", "chat": "general"})
	if m := readFrame(t, ws); m["type"] != "unsubscribed" {
		t.Fatalf("unsubscribe: %v", m)
	}
	h.send("general", "pb.k5", "unseen")
	writeFrame(t, ws, map[string]any{"type": "ping"})
	if m := readFrame(t, ws); m["type"] != "pong" {
		t.Fatalf("after unsubscribe got %v", m)
	}
}

func TestResumeSince(t *testing.T) {
	h := newHarness(t, nil)
	ws := h.dial()
	subscribe(t, ws, "general", nil)
	for i := 1; i <= 3; i++ {
		h.send("general", fmt.Sprintf("pb.%d", i), fmt.Sprint(i))
		expectEvent(t, ws, "general", int64(i), fmt.Sprint(i))
	}
	ws.Close()
	for i := 4; i <= 6; i++ {
		h.send("general", fmt.Sprintf("pb.%d", i), fmt.Sprint(i))
	}
	h.flush()

	ws = h.dial()
	since := int64(3)
	if m := subscribe(t, ws, "general", &since); m["seq"] != 6.0 || m["truncated"] != nil {
		t.Fatalf("subscribed: %v", m)
	}
	for i := 4; i <= 6; i++ {
		expectEvent(t, ws, "general", int64(i), fmt.Sprint(i))
	}
	h.send("general", "pb.7", "7")
	expectEvent(t, ws, "general", 7, "7")

	h.sink.mu.Lock()
	resumed := fmt.Sprint(h.sink.resumed)
	h.sink.mu.Unlock()
	if resumed != "[general general]" {
		t.Fatalf("Resume calls: %s", resumed)
	}
}

// TestResumeDuringTraffic subscribes with since while events keep being
// committed: every seq must arrive exactly once, in order.
func TestResumeDuringTraffic(t *testing.T) {
	// The sender is not paced by the reader: a buffer for every frame keeps
	// a reader slowed by a loaded machine from being dropped as too slow,
	// which another test covers.
	h := newHarness(t, func(o *Options) { o.ClientBuffer = 4096 })
	const n = 2000
	for i := 1; i <= 300; i++ {
		h.send("general", fmt.Sprintf("pb.%d", i), fmt.Sprint(i))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 301; i <= n; i++ {
			if _, err := h.c.Send(context.Background(), &bridge.Outgoing{
				Event: bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{ID: "general"}, Text: fmt.Sprint(i)},
				Key:   fmt.Sprintf("pb.%d", i),
			}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	ws := h.dial()
	since := int64(0)
	subscribe(t, ws, "general", &since)
	for i := 1; i <= n; i++ {
		expectEvent(t, ws, "general", int64(i), fmt.Sprint(i))
	}
	<-done
}

func TestHistoryTrimmed(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.History = 5 })
	for i := 1; i <= 20; i++ {
		h.send("general", fmt.Sprintf("pb.%d", i), fmt.Sprint(i))
	}
	if n := h.logged("general"); n != 5 {
		t.Fatalf("%d events kept, want 5", n)
	}
	ws := h.dial()
	since := int64(2)
	if m := subscribe(t, ws, "general", &since); m["seq"] != 20.0 || m["truncated"] != true {
		t.Fatalf("subscribed: %v", m)
	}
	for i := 16; i <= 20; i++ {
		expectEvent(t, ws, "general", int64(i), fmt.Sprint(i))
	}

	// With a larger history trimming is batched but the replay still
	// gives exactly the last History events.
	h2 := newHarness(t, func(o *Options) { o.History = 100 })
	for i := 1; i <= 130; i++ {
		h2.send("general", fmt.Sprintf("pb.%d", i), fmt.Sprint(i))
	}
	if n := h2.logged("general"); n < 100 || n > 100+12 {
		t.Fatalf("%d events kept, want 100 to 112", n)
	}
	ws2 := h2.dial()
	since = 0
	subscribe(t, ws2, "general", &since)
	for i := 31; i <= 130; i++ {
		expectEvent(t, ws2, "general", int64(i), fmt.Sprint(i))
	}
}

func TestSlowClientDropped(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.ClientBuffer = 8 })
	slow := h.dial()
	fast := h.dial()
	subscribe(t, slow, "general", nil)
	subscribe(t, fast, "general", nil)
	text := strings.Repeat("x", 32<<10)
	// Until the slow client's socket and queue are full: paced by the
	// fast client, which must get every event.
	n := 0
	for !strings.Contains(h.logs.String(), "client too slow") {
		n++
		if n > 1000 {
			t.Fatal("the slow client was never dropped")
		}
		h.send("general", fmt.Sprintf("pb.%d", n), text)
		expectEvent(t, fast, "general", int64(n), text)
	}
	for range 5 {
		n++
		h.send("general", fmt.Sprintf("pb.%d", n), text)
		expectEvent(t, fast, "general", int64(n), text)
	}
	var err error
	for err == nil {
		slow.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err = slow.ReadMessage()
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != "client too slow: 8 frames unread" {
		t.Fatalf("slow client: %v", err)
	}
	h.send("general", "pb.last", "still here")
	expectEvent(t, fast, "general", int64(n+1), "still here")
}

func TestMediaInAndOut(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.MaxMediaBytes = 100 })
	data := []byte("\x89PNG fake image bytes")
	body := fmt.Sprintf(`{"id":"p1","kind":"message","chat":"general","media":[{"mime":"image/png","name":"a.png","size":1,"caption":"look","data":%q}]}`,
		base64.StdEncoding.EncodeToString(data))
	if status, m := h.post(body); status != http.StatusAccepted {
		t.Fatalf("POST media: %d %v", status, m)
	}
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	got := h.sink.got()
	if len(got) != 1 || len(got[0].Media) != 1 {
		t.Fatalf("sink got %+v", got)
	}
	m := got[0].Media[0]
	if m.Ref != digest || m.MIME != "image/png" || m.Name != "a.png" || m.Size != int64(len(data)) || m.Caption != "look" {
		t.Fatalf("inbound media %+v", m)
	}
	r, err := h.c.OpenMedia(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(b, data) {
		t.Fatalf("OpenMedia read %q", b)
	}
	st, err := os.Stat(filepath.Join(h.dir, "api-media", "chat-api", digest))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("media file: %v %v", st, err)
	}
	if st, err := os.Stat(filepath.Join(h.dir, "api-media", "chat-api")); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("media dir: %v %v", st, err)
	}
	for _, ref := range []string{"../bridge.db", strings.Repeat("A", 64), ""} {
		if _, err := h.c.OpenMedia(context.Background(), bridge.Media{Ref: ref}); err == nil || !bridge.IsPermanent(err) {
			t.Errorf("OpenMedia(%q) = %v, want a permanent error", ref, err)
		}
	}
	// Inbound over max_media_bytes.
	big := fmt.Sprintf(`{"kind":"message","chat":"general","media":[{"data":%q}]}`, base64.StdEncoding.EncodeToString(make([]byte, 101)))
	if status, m := h.post(big); status != http.StatusRequestEntityTooLarge || !strings.Contains(m["error"].(string), "max_media_bytes") {
		t.Fatalf("oversized inbound media: %d %v", status, m)
	}

	// Out: a subscriber gets a URL that serves the bytes.
	ws := h.dial()
	subscribe(t, ws, "general", nil)
	out := []byte("GIF89a outgoing")
	open := func(b []byte) func(context.Context) (io.ReadCloser, error) {
		return func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	_, err = h.c.Send(context.Background(), &bridge.Outgoing{
		Event: bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{ID: "general"},
			Media: []bridge.Media{{MIME: "image/gif", Name: "b.gif", Caption: "cap", Open: open(out)}}},
		Key: "pb.m1",
	})
	if err != nil {
		t.Fatal(err)
	}
	frame := readFrame(t, ws)
	media := frame["event"].(map[string]any)["media"].([]any)[0].(map[string]any)
	osum := sha256.Sum256(out)
	wantURL := "/v1/media/" + hex.EncodeToString(osum[:])
	if media["url"] != wantURL || media["mime"] != "image/gif" || media["size"] != float64(len(out)) || media["name"] != "b.gif" || media["caption"] != "cap" {
		t.Fatalf("outbound media %v", media)
	}
	req, _ := http.NewRequest(http.MethodGet, h.url(wantURL), nil)
	req.Header.Set("Authorization", "Bearer "+h.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/gif" || !bytes.Equal(b, out) {
		t.Fatalf("GET media: %d %v %q", resp.StatusCode, resp.Header, b)
	}
	if status, _, _ := h.do(http.MethodGet, wantURL, "", nil); status != http.StatusUnauthorized {
		t.Fatalf("GET media without token: %d", status)
	}

	// Outbound over max_media_bytes is permanent and names the limit.
	_, err = h.c.Send(context.Background(), &bridge.Outgoing{
		Event: bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{ID: "general"},
			Media: []bridge.Media{{Name: "huge.bin", Open: open(make([]byte, 101))}}},
		Key: "pb.m2",
	})
	if err == nil || !bridge.IsPermanent(err) || !strings.Contains(err.Error(), "max_media_bytes") {
		t.Fatalf("oversized outbound media: %v", err)
	}
	if n := h.logged("general"); n != 1 {
		t.Fatalf("%d events logged, want 1", n)
	}
	entries, _ := os.ReadDir(filepath.Join(h.dir, "api-media", "chat-api"))
	if len(entries) != 2 {
		t.Fatalf("media dir holds %d files, want 2 (no leftovers)", len(entries))
	}
}

func TestGeneratedToken(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.Token = "" })
	path := filepath.Join(h.dir, "chat-api.token")
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", st, err)
	}
	if len(h.token) != 64 {
		t.Fatalf("token %d characters, want 64", len(h.token))
	}
	if status, _ := h.post(`{"kind":"message","chat":"general","text":"hi"}`); status != http.StatusAccepted {
		t.Fatalf("POST with the generated token: %d", status)
	}
	if !strings.Contains(h.logs.String(), path) {
		t.Errorf("the token file was not logged:\n%s", h.logs.String())
	}
	first := h.token
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	h.start(func(o *Options) { o.Token = "" })
	if h.token != first {
		t.Fatal("the token changed across restarts")
	}
	if status, _ := h.post(`{"kind":"message","chat":"general","text":"hi"}`); status != http.StatusAccepted {
		t.Fatalf("POST after restart: %d", status)
	}
}

func TestListenInUse(t *testing.T) {
	h := newHarness(t, nil)
	c, err := New(bridge.Env{Name: "second", StateDir: h.dir, Store: h.store}, &Options{
		Listen: h.c.Addr(), Token: testToken, MaxMessageBytes: 1 << 20, MaxMediaBytes: 1 << 20, History: 10, ClientBuffer: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Start(context.Background(), &fakeSink{store: h.store})
	if err == nil || !strings.Contains(err.Error(), "address already in use — set connectors.second.listen to a free address") {
		t.Fatalf("Start on a taken address: %v", err)
	}
}

func TestStopClosesClients(t *testing.T) {
	h := newHarness(t, nil)
	ws := h.dial()
	done := make(chan error, 1)
	go func() {
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err := ws.ReadMessage()
		done <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	var ce *websocket.CloseError
	if err := <-done; !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway || ce.Text != "phonebridge is stopping" {
		t.Fatalf("client saw %v", err)
	}
	if _, err := net.DialTimeout("tcp", h.c.Addr(), time.Second); err == nil {
		t.Fatal("still listening after Stop")
	}
	h.sink.mu.Lock()
	defer h.sink.mu.Unlock()
	if s := h.sink.states; len(s) != 2 || s[0] != bridge.StateConnected || s[1] != bridge.StateStopped {
		t.Fatalf("states %v", s)
	}
}

func TestCapabilities(t *testing.T) {
	c, err := New(bridge.Env{Name: "x", Store: &bridge.Store{}}, &Options{MaxTextLength: 4000})
	if err != nil {
		t.Fatal(err)
	}
	want := bridge.Capabilities{Edits: true, Deletes: true, Reactions: true, Replies: true, Media: true, Locations: true, Polls: true, HTML: true, Typing: true, Read: true, History: true, MaxTextLength: 4000}
	if c.Capabilities() != want {
		t.Fatalf("capabilities %+v", c.Capabilities())
	}
	if typ, ok := bridge.LookupType("api"); !ok || typ.NewOptions().(*Options).Listen != DefaultListen {
		t.Fatal("the api type is not registered with its defaults")
	}
}

func TestValidate(t *testing.T) {
	var problems []config.Problem
	NewOptions().Validate(config.NewChecker("connectors.api", &problems))
	if len(problems) != 0 {
		t.Fatalf("defaults have problems: %v", problems)
	}
	bad := &Options{Listen: "localhost", Token: "short", MaxMessageBytes: 10, MaxMediaBytes: 0, History: 0, ClientBuffer: 1, MaxTextLength: -1}
	bad.Validate(config.NewChecker("connectors.api", &problems))
	var paths []string
	for _, p := range problems {
		paths = append(paths, p.Path)
	}
	want := "connectors.api.listen connectors.api.token connectors.api.max_message_bytes connectors.api.max_media_bytes connectors.api.history connectors.api.client_buffer connectors.api.max_text_length"
	if strings.Join(paths, " ") != want {
		t.Fatalf("problems at %v\nwant %s\n%v", paths, want, problems)
	}
}

// A group commit calls back after the whole batch, so a subscriber's
// replay can already have sent an event whose broadcast is still to come;
// and the broadcast can land while the replay runs or after it ended.
// Either way the client must get each seq once, in order.
func TestLateBroadcastAfterReplayIsNotRepeated(t *testing.T) {
	cl := &client{limit: 100, wake: make(chan struct{}, 1)}
	sub := &subscription{cl: cl, replaying: true}
	frame := func(seq int64) []byte { return []byte(fmt.Sprint(seq)) }

	sub.deliver(5, frame(5)) // held during the replay; the replay covers it
	sub.deliver(7, frame(7)) // held; newer than the replay
	sub.goLive(6)            // the replay sent 1..6
	sub.deliver(6, frame(6)) // late broadcast of a replayed seq
	sub.deliver(7, frame(7)) // late duplicate of a held one
	sub.deliver(8, frame(8))
	sub.deliver(0, []byte("typing")) // ephemeral: no seq, always passed on

	var got []string
	for _, f := range cl.frames {
		got = append(got, string(f))
	}
	if strings.Join(got, ",") != "7,8,typing" {
		t.Errorf("client got %v, want 7,8,typing", got)
	}
}

// TestPruneTakesOldEventsOutOfTheLog: events logged before the cutoff
// leave the log (the message text they carry with them), the rest stay,
// and a client resuming from the start is told it missed some.
func TestPruneTakesOldEventsOutOfTheLog(t *testing.T) {
	h := newHarness(t, nil)
	for i := 1; i <= 8; i++ {
		h.send("general", fmt.Sprintf("pb.%d", i), fmt.Sprint(i))
	}
	h.send("other", "pb.o1", "other 1")
	old := time.Now().Add(-48 * time.Hour).UnixMilli()
	if err := h.store.Write(context.Background(), func(tx *bridge.Tx) error {
		_, err := tx.Exec(`UPDATE api_events SET created_at = ? WHERE key IN ('pb.1', 'pb.2', 'pb.3', 'pb.o1')`, old)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	n, err := h.c.Prune(context.Background(), time.Now().Add(-24*time.Hour))
	if err != nil || n != 4 {
		t.Fatalf("Prune = %d, %v; want 4 events", n, err)
	}
	if got := h.logged("general"); got != 5 {
		t.Errorf("general keeps %d events, want 5", got)
	}
	if got := h.logged("other"); got != 0 {
		t.Errorf("other keeps %d events, want 0", got)
	}
	ws := h.dial()
	since := int64(0)
	if m := subscribe(t, ws, "general", &since); m["truncated"] != true {
		t.Fatalf("subscribed from 0 after a prune: %v, want truncated", m)
	}
	for i := 4; i <= 8; i++ {
		expectEvent(t, ws, "general", int64(i), fmt.Sprint(i))
	}
	if n, err := h.c.Prune(context.Background(), time.Now().Add(-24*time.Hour)); err != nil || n != 0 {
		t.Errorf("a second Prune = %d, %v; want nothing left to prune", n, err)
	}
}

// TestHistoryFlagged: a message from the origin's past reaches clients
// flagged as history, with its own time (a client cannot send one:
// TestPostBadRequests).
func TestHistoryFlagged(t *testing.T) {
	h := newHarness(t, nil)
	ws := h.dial()
	subscribe(t, ws, "general", nil)
	sent := time.Date(2023, 1, 2, 3, 4, 5, 0, time.UTC)
	if _, err := h.c.Send(context.Background(), &bridge.Outgoing{Event: bridge.Event{Kind: bridge.KindMessage,
		Chat: bridge.ChatRef{Connector: "chat-api", ID: "general"}, Sender: bridge.Sender{ID: "alice@wa", Name: "Alice"},
		Time: sent, Text: "long ago", History: true}, Key: "pb.h1"}); err != nil {
		t.Fatal(err)
	}
	ev := expectEvent(t, ws, "general", 1, "long ago")
	if ev["history"] != true || ev["time"] != "2023-01-02T03:04:05Z" {
		t.Errorf("the history message reached the client as %v", ev)
	}
	h.send("general", "pb.h2", "now")
	if ev := expectEvent(t, ws, "general", 2, "now"); ev["history"] != nil {
		t.Errorf("a live message reached the client flagged history: %v", ev)
	}
}

// A voice note keeps its kind, length and waveform and a place its
// coordinates, both ways; bad shapes are refused with the field named.
func TestVoiceNotesAndPlacesInAndOut(t *testing.T) {
	h := newHarness(t, nil)
	data := base64.StdEncoding.EncodeToString([]byte("OggS voice"))
	body := fmt.Sprintf(`{"id":"v1","kind":"message","chat":"general",
		"media":[{"mime":"audio/ogg","name":"v.ogg","data":%q,"kind":"voice","duration_ms":4200,"waveform":[0,512,1024],"thumbnail":"/9j/AA=="}],
		"location":{"latitude":48.8584,"longitude":2.2945,"name":"Tour Eiffel","live":true},"expires_in_sec":86400,
		"text":"for @Bob","mentions":[{"id":"bob@wa","name":"Bob","text":"@Bob"}],
		"poll":{"question":"Lunch?","options":["Pizza","Sushi"],"choices":1}}`, data)
	if status, m := h.post(body); status != http.StatusAccepted {
		t.Fatalf("POST: %d %v", status, m)
	}
	got := h.sink.got()
	if len(got) != 1 || len(got[0].Media) != 1 {
		t.Fatalf("sink got %+v", got)
	}
	m, l := got[0].Media[0], got[0].Location
	if m.Kind != bridge.MediaVoice || m.DurationMS != 4200 || !slices.Equal(m.Waveform, []int{0, 512, 1024}) || !bytes.Equal(m.Thumbnail, []byte{0xFF, 0xD8, 0xFF, 0}) {
		t.Errorf("inbound media %+v", m)
	}
	if l == nil || *l != (bridge.Location{Latitude: 48.8584, Longitude: 2.2945, Name: "Tour Eiffel", Live: true}) {
		t.Errorf("inbound location %+v", l)
	}
	if got[0].ExpiresInSec != 86400 {
		t.Errorf("inbound expiry %d s, want a day", got[0].ExpiresInSec)
	}
	if want := []bridge.Mention{{ID: "bob@wa", Name: "Bob", Text: "@Bob"}}; !reflect.DeepEqual(got[0].Mentions, want) {
		t.Errorf("inbound mentions %+v", got[0].Mentions)
	}
	if p := got[0].Poll; p == nil || p.Question != "Lunch?" || len(p.Options) != 2 || p.Choices != 1 {
		t.Errorf("inbound poll %+v", got[0].Poll)
	}
	for bad, says := range map[string]string{
		fmt.Sprintf(`{"kind":"message","chat":"general","media":[{"data":%q,"kind":"hologram"}]}`, data):                                                                           "media[0].kind",
		fmt.Sprintf(`{"kind":"message","chat":"general","media":[{"data":%q,"waveform":[2000]}]}`, data):                                                                           "media[0].waveform",
		`{"kind":"message","chat":"general","location":{"latitude":123,"longitude":0}}`:                                                                                            "not on Earth",
		fmt.Sprintf(`{"kind":"message","chat":"general","media":[{"data":%q,"thumbnail":%q}]}`, data, base64.StdEncoding.EncodeToString(make([]byte, bridge.MaxThumbnailBytes+1))): "thumbnail",
	} {
		if status, m := h.post(bad); status != http.StatusBadRequest || !strings.Contains(m["error"].(string), says) {
			t.Errorf("%s: %d %v, want 400 naming %s", bad, status, m, says)
		}
	}

	ws := h.dial()
	subscribe(t, ws, "general", nil)
	open := func(context.Context) (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("webp")), nil }
	if _, err := h.c.Send(context.Background(), &bridge.Outgoing{
		Event: bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{ID: "general"},
			Media:    []bridge.Media{{MIME: "image/webp", Name: "s.webp", Kind: bridge.MediaSticker, Width: 512, Height: 512, Open: open, Thumbnail: []byte{1, 2}}},
			Location: &bridge.Location{Latitude: -1.5, Longitude: 2.25, Address: "somewhere"}, ExpiresInSec: 3600,
			Text: "@Ann", Mentions: []bridge.Mention{{Owner: true, Name: "Ann", Text: "@Ann"}}},
		Key: "pb.v1",
	}); err != nil {
		t.Fatal(err)
	}
	ev := readFrame(t, ws)["event"].(map[string]any)
	media := ev["media"].([]any)[0].(map[string]any)
	if media["kind"] != "sticker" || media["width"] != float64(512) || media["height"] != float64(512) || media["thumbnail"] != "AQI=" {
		t.Errorf("outbound media %v", media)
	}
	if loc, _ := ev["location"].(map[string]any); loc["latitude"] != -1.5 || loc["longitude"] != 2.25 || loc["address"] != "somewhere" {
		t.Errorf("outbound location %v", ev["location"])
	}
	if ev["expires_in_sec"] != float64(3600) {
		t.Errorf("outbound expiry %v, want 3600", ev["expires_in_sec"])
	}
	if m, _ := ev["mentions"].([]any); len(m) != 1 || m[0].(map[string]any)["owner"] != true || m[0].(map[string]any)["text"] != "@Ann" {
		t.Errorf("outbound mentions %v", ev["mentions"])
	}
}

// A vote comes in as its choices and goes out with the poll's options
// and the count (and a live location's move comes in as an edit with a
// place); a vote without its choices, or with repeated ones, is
// refused naming what is wrong.
func TestVotesInAndOut(t *testing.T) {
	h := newHarness(t, nil)
	if status, m := h.post(`{"id":"v1","kind":"vote","chat":"general","target":"p1","vote":{"choices":[2,0]}}`); status != http.StatusAccepted {
		t.Fatalf("POST vote: %d %v", status, m)
	}
	if status, m := h.post(`{"id":"v2","kind":"vote","chat":"general","target":"p1","vote":{"choices":[]}}`); status != http.StatusAccepted {
		t.Fatalf("POST withdrawal: %d %v", status, m)
	}
	// A live location moves by an edit with the new place.
	if status, m := h.post(`{"id":"l1","kind":"edit","chat":"general","target":"loc","location":{"latitude":1.5,"longitude":2,"live":true}}`); status != http.StatusAccepted {
		t.Fatalf("POST move: %d %v", status, m)
	}
	got := h.sink.got()
	if len(got) != 3 || got[2].Kind != bridge.KindEdit || got[2].Location == nil || got[2].Location.Latitude != 1.5 {
		t.Errorf("the move reached the core as %+v", got[len(got)-1])
	}
	if len(got) != 3 || got[0].Kind != bridge.KindVote || got[0].Target != "p1" || !slices.Equal(got[0].Vote.Choices, []int{2, 0}) ||
		got[1].Vote == nil || len(got[1].Vote.Choices) != 0 {
		t.Errorf("sink got %+v", got)
	}
	for bad, says := range map[string]string{
		`{"kind":"vote","chat":"general","target":"p1"}`:                              "needs its choices",
		`{"kind":"vote","chat":"general","target":"p1","vote":{}}`:                    "vote.choices is required",
		`{"kind":"vote","chat":"general","target":"p1","vote":{"choices":[1,1]}}`:     "distinct",
		`{"kind":"vote","chat":"general","vote":{"choices":[1]}}`:                     "needs a target",
		`{"kind":"vote","chat":"general","target":"p1","vote":{"choices":[0],"x":1}}`: "unknown field",
	} {
		if status, m := h.post(bad); status != http.StatusBadRequest || !strings.Contains(m["error"].(string), says) {
			t.Errorf("%s: %d %v, want 400 naming %s", bad, status, m, says)
		}
	}

	ws := h.dial()
	subscribe(t, ws, "general", nil)
	if _, err := h.c.Send(context.Background(), &bridge.Outgoing{
		Event: bridge.Event{Kind: bridge.KindVote, Chat: bridge.ChatRef{ID: "general"}, Sender: bridge.Sender{ID: "bob@wa", Name: "Bob"}, Target: "7",
			Vote: &bridge.Vote{Choices: []int{1}, Question: "Lunch?", Options: []string{"Pizza", "Sushi"}, Tally: []int{0, 1}}},
		Key: "pb.vote1",
	}); err != nil {
		t.Fatal(err)
	}
	ev := readFrame(t, ws)["event"].(map[string]any)
	if ev["kind"] != "vote" || ev["target"] != "7" || fmt.Sprint(ev["vote"]) != "map[choices:[1] options:[Pizza Sushi] question:Lunch? tally:[0 1]]" {
		t.Errorf("outbound vote %v", ev)
	}
}
