package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"

	"github.com/phonebridge/phonebridge/bridge"
)

// wait bounds every wait on a server or a handler in these tests.
const wait = 10 * time.Second

func openTestStore(t *testing.T) *bridge.Store {
	t.Helper()
	s, err := bridge.OpenStore(filepath.Join(t.TempDir(), "pb.db"), "normal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testRegistration is a registration for o with fixed tokens.
func testRegistration(o *Options) *appservice.Registration {
	return &appservice.Registration{
		ID:              "phonebridge-mx",
		AppToken:        strings.Repeat("a", 64),
		ServerToken:     strings.Repeat("h", 64),
		SenderLocalpart: o.BotLocalpart,
	}
}

func newTestASBridge(t *testing.T, name string, store *bridge.Store, o *Options, reg *appservice.Registration) *asBridge {
	t.Helper()
	b, err := newASBridge(context.Background(), bridge.Env{Name: name, Store: store}, o, reg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startServer starts b's appservice API on a free loopback port and
// stops it when the test ends.
func startServer(t *testing.T, b *asBridge, h txnHandler) (*asServer, string) {
	t.Helper()
	b.opts.Listen = "127.0.0.1:0"
	s := b.newServer(h)
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		s.stop(ctx)
	})
	return s, "http://" + s.addr().String()
}

type asResponse struct {
	status  int
	errcode string
	body    string
}

// call makes one request to the appservice API; token goes in the
// Authorization header unless it is "" (none).
func call(t *testing.T, method, u, token string, body string) asResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return asResponse{}
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, u, err)
		return asResponse{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Errcode string `json:"errcode"`
	}
	json.Unmarshal(b, &e)
	return asResponse{resp.StatusCode, e.Errcode, string(b)}
}

const txnBody = `{"events":[{"type":"m.room.message","event_id":"$e1","room_id":"!r:example.org","sender":"@owner:example.org","origin_server_ts":1,"content":{"msgtype":"m.text","body":"hello"}},
	{"type":"m.room.member","state_key":"@wa_1:example.org","event_id":"$e2","room_id":"!r:example.org","sender":"@phonebridgebot:example.org","origin_server_ts":2,"content":{"membership":"invite"}}]}`

func TestASServerAuth(t *testing.T) {
	o := asOptions()
	reg := testRegistration(o)
	b := newTestASBridge(t, "mx", openTestStore(t), o, reg)
	var calls atomic.Int32
	_, base := startServer(t, b, func(context.Context, string, []*event.Event) error { calls.Add(1); return nil })
	hs := reg.ServerToken
	wrong := strings.Repeat("h", 63) + "x"

	for _, c := range []struct {
		name, method, path, token, body string
		status                          int
		errcode                         string
	}{
		{"no token", "PUT", "/_matrix/app/v1/transactions/1", "", txnBody, 401, "M_UNAUTHORIZED"},
		{"wrong token", "PUT", "/_matrix/app/v1/transactions/1", wrong, txnBody, 403, "M_FORBIDDEN"},
		{"as_token is not hs_token", "PUT", "/_matrix/app/v1/transactions/1", reg.AppToken, txnBody, 403, "M_FORBIDDEN"},
		{"wrong query token", "PUT", "/_matrix/app/v1/transactions/1?access_token=" + wrong, "", txnBody, 403, "M_FORBIDDEN"},
		{"wrong token, legacy path", "PUT", "/transactions/1", wrong, txnBody, 403, "M_FORBIDDEN"},
		{"wrong token, user query", "GET", "/_matrix/app/v1/users/%40wa_1%3Aexample.org", wrong, "", 403, "M_FORBIDDEN"},
		{"wrong token, ping", "POST", "/_matrix/app/v1/ping", wrong, "{}", 403, "M_FORBIDDEN"},
		{"no token, unknown path", "GET", "/nothing", "", "", 401, "M_UNAUTHORIZED"},
		{"ping", "POST", "/_matrix/app/v1/ping", hs, `{"transaction_id":"p1"}`, 200, ""},
		{"query token", "POST", "/_matrix/app/v1/ping?access_token=" + hs, "", "{}", 200, ""},
		{"ghost exists", "GET", "/_matrix/app/v1/users/%40wa_15551234567%3D40s.whatsapp.net%3Aexample.org", hs, "", 200, ""},
		{"bot exists", "GET", "/_matrix/app/v1/users/%40phonebridgebot%3Aexample.org", hs, "", 200, ""},
		{"ghost, legacy path", "GET", "/users/%40wa_1%3Aexample.org", hs, "", 200, ""},
		{"not ours", "GET", "/_matrix/app/v1/users/%40alice%3Aexample.org", hs, "", 404, "M_NOT_FOUND"},
		{"ghost of another server", "GET", "/_matrix/app/v1/users/%40wa_1%3Aother.org", hs, "", 404, "M_NOT_FOUND"},
		{"alias", "GET", "/_matrix/app/v1/rooms/%23wa_1%3Aexample.org", hs, "", 404, "M_NOT_FOUND"},
		{"unknown path", "GET", "/_matrix/app/v1/thirdparty/protocol/x", hs, "", 404, "M_UNRECOGNIZED"},
	} {
		r := call(t, c.method, base+c.path, c.token, c.body)
		if r.status != c.status || r.errcode != c.errcode {
			t.Errorf("%s: %d %q (%s), want %d %q", c.name, r.status, r.errcode, r.body, c.status, c.errcode)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("refused transactions reached the handler %d times", n)
	}
}

func TestASServerTransactions(t *testing.T) {
	o := asOptions()
	reg := testRegistration(o)
	store := openTestStore(t)
	b := newTestASBridge(t, "mx", store, o, reg)

	var mu sync.Mutex
	var got []string // txnID:event ids
	fail := map[string]int{"2": 1}
	handler := func(_ context.Context, txnID string, events []*event.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if fail[txnID] > 0 {
			fail[txnID]--
			return errors.New("the core is away")
		}
		if txnID == "1" {
			msg := events[0].Content.AsMessage()
			if msg == nil || msg.Body != "hello" || events[0].Type != event.EventMessage {
				return fmt.Errorf("event 0 not parsed: %+v", events[0])
			}
			if mem := events[1].Content.AsMember(); mem == nil || mem.Membership != event.MembershipInvite || !events[1].Type.IsState() {
				return fmt.Errorf("event 1 not parsed: %+v", events[1])
			}
		}
		ids := make([]string, len(events))
		for i, e := range events {
			ids[i] = e.ID.String()
		}
		got = append(got, txnID+":"+strings.Join(ids, ","))
		return nil
	}
	snapshot := func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(got, " ")
	}
	srv, base := startServer(t, b, handler)
	hs := reg.ServerToken
	put := func(base, path string) asResponse {
		return call(t, "PUT", base+path, hs, txnBody)
	}

	if r := put(base, "/_matrix/app/v1/transactions/1"); r.status != 200 || r.body != "{}\n" {
		t.Fatalf("txn 1: %d %s", r.status, r.body)
	}
	if r := put(base, "/_matrix/app/v1/transactions/1"); r.status != 200 {
		t.Fatalf("txn 1 retried: %d %s", r.status, r.body)
	}
	if s := snapshot(); s != "1:$e1,$e2" {
		t.Fatalf("applied %q after a retry, want txn 1 once", s)
	}
	// Dendrite names a transaction after its first event's queue time: an
	// event redelivered after a crash, batched with a new one, comes under
	// the old id. The new body is applied (per event, the core keeps it
	// idempotent).
	batched := strings.Replace(txnBody, `"$e2"`, `"$e3"`, 1)
	if r := call(t, "PUT", base+"/_matrix/app/v1/transactions/1", hs, batched); r.status != 200 {
		t.Fatalf("txn 1 with another body: %d %s", r.status, r.body)
	}
	if r := call(t, "PUT", base+"/_matrix/app/v1/transactions/1", hs, batched); r.status != 200 {
		t.Fatalf("txn 1 with another body, retried: %d %s", r.status, r.body)
	}
	if s := snapshot(); s != "1:$e1,$e2 1:$e1,$e3" {
		t.Fatalf("applied %q, want the other body once", s)
	}
	mu.Lock()
	got = got[:1]
	mu.Unlock()
	// A handler failure answers 500 and records nothing: the retry is
	// applied.
	if r := put(base, "/_matrix/app/v1/transactions/2"); r.status != 500 {
		t.Fatalf("txn 2 with a failing handler: %d %s, want 500", r.status, r.body)
	}
	if r := put(base, "/_matrix/app/v1/transactions/2"); r.status != 200 {
		t.Fatalf("txn 2 retried: %d %s", r.status, r.body)
	}
	if r := put(base, "/transactions/3"); r.status != 200 { // legacy path
		t.Fatalf("txn 3: %d %s", r.status, r.body)
	}
	if r := put(base, "/_matrix/app/v1/transactions/3?access_token="+hs); r.status != 200 {
		t.Fatalf("txn 3 on the current path: %d %s", r.status, r.body)
	}
	if s := snapshot(); s != "1:$e1,$e2 2:$e1,$e2 3:$e1,$e2" {
		t.Fatalf("applied %q", s)
	}
	if r := call(t, "PUT", base+"/_matrix/app/v1/transactions/4", hs, `{"events": 5}`); r.status != 400 || r.errcode != "M_BAD_JSON" {
		t.Errorf("bad body: %d %s", r.status, r.body)
	}
	big := `{"events":[],"pad":"` + strings.Repeat("x", maxTxnBytes) + `"}`
	if r := call(t, "PUT", base+"/_matrix/app/v1/transactions/5", hs, big); r.status != 413 || r.errcode != "M_TOO_LARGE" {
		t.Errorf("oversized body: %d %s", r.status, r.body)
	}

	// The record is durable: a restarted server skips what was applied.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := srv.stop(ctx); err != nil {
		t.Fatal(err)
	}
	b2 := newTestASBridge(t, "mx", store, o, reg)
	_, base2 := startServer(t, b2, handler)
	if r := put(base2, "/_matrix/app/v1/transactions/1"); r.status != 200 {
		t.Fatalf("txn 1 after a restart: %d", r.status)
	}
	if s := snapshot(); s != "1:$e1,$e2 2:$e1,$e2 3:$e1,$e2" {
		t.Fatalf("after a restart, applied %q", s)
	}
	// Another connector in the same database has its own transactions.
	b3 := newTestASBridge(t, "mx2", store, o, reg)
	_, base3 := startServer(t, b3, handler)
	if r := put(base3, "/_matrix/app/v1/transactions/1"); r.status != 200 {
		t.Fatalf("txn 1 on another connector: %d", r.status)
	}
	if s := snapshot(); !strings.HasSuffix(s, " 1:$e1,$e2") {
		t.Fatalf("another connector's txn 1 was not applied: %q", s)
	}
}

// TestASServerConcurrentRetry: a retry arriving while the original is
// still being applied waits for it and is not applied again.
func TestASServerConcurrentRetry(t *testing.T) {
	o := asOptions()
	reg := testRegistration(o)
	waits := make(chan struct{}, 1)
	log := slog.New(logSignal{msg: msgTxnWaits, ch: waits})
	b, err := newASBridge(context.Background(), bridge.Env{Name: "mx", Store: openTestStore(t), Logger: log}, o, reg)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	// A failure must not leave the handler blocked until the client gives up.
	releaseOnce := sync.OnceFunc(func() { close(release) })
	defer releaseOnce()
	calls := make(chan struct{}, 2)
	_, base := startServer(t, b, func(ctx context.Context, _ string, _ []*event.Event) error {
		calls <- struct{}{}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})

	results := make(chan asResponse, 2)
	go func() { results <- call(t, "PUT", base+"/_matrix/app/v1/transactions/7", reg.ServerToken, txnBody) }()
	<-calls
	go func() { results <- call(t, "PUT", base+"/_matrix/app/v1/transactions/7", reg.ServerToken, txnBody) }()
	select {
	case <-waits:
	case <-calls:
		t.Fatal("the retry was applied while the original still was")
	case <-time.After(wait):
		t.Fatal("the retry neither waited nor was applied")
	}
	releaseOnce()
	for range 2 {
		select {
		case r := <-results:
			if r.status != 200 {
				t.Errorf("a request for txn 7 got %d %s", r.status, r.body)
			}
		case <-time.After(wait):
			t.Fatal("a request for txn 7 was not answered")
		}
	}
	if len(calls) != 0 {
		t.Errorf("txn 7 was applied again after the original")
	}
}

// logSignal is a slog handler that sends on ch for each record with msg.
type logSignal struct {
	msg string
	ch  chan<- struct{}
}

func (h logSignal) Enabled(context.Context, slog.Level) bool { return true }
func (h logSignal) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h logSignal) WithGroup(string) slog.Handler            { return h }
func (h logSignal) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		select {
		case h.ch <- struct{}{}:
		default:
		}
	}
	return nil
}

// TestASServerStop: stop lets an in-flight transaction finish; past its
// deadline it cancels the handler instead.
func TestASServerStop(t *testing.T) {
	o := asOptions()
	reg := testRegistration(o)
	b := newTestASBridge(t, "mx", openTestStore(t), o, reg)
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	srv, base := startServer(t, b, func(ctx context.Context, _ string, _ []*event.Event) error {
		entered <- struct{}{}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	addr := srv.addr().String()

	result := make(chan asResponse, 1)
	go func() { result <- call(t, "PUT", base+"/_matrix/app/v1/transactions/8", reg.ServerToken, txnBody) }()
	<-entered
	shutdown := make(chan struct{})
	srv.srv.RegisterOnShutdown(func() { close(shutdown) })
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		stopped <- srv.stop(ctx)
	}()
	select {
	case <-shutdown:
	case <-time.After(wait):
		t.Fatal("stop did not shut the server down")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("the listener is still open while stopping")
	}
	select {
	case err := <-stopped:
		t.Fatalf("stop returned (%v) while a transaction was in flight", err)
	default:
	}
	close(release)
	if r := <-result; r.status != 200 {
		t.Errorf("the in-flight transaction got %d %s, want 200", r.status, r.body)
	}
	if err := <-stopped; err != nil {
		t.Errorf("stop = %v", err)
	}

	// Past stop's deadline, the handler's context ends.
	handlerErr := make(chan error, 1)
	b2 := newTestASBridge(t, "mx", openTestStore(t), o, reg)
	srv2, base2 := startServer(t, b2, func(ctx context.Context, _ string, _ []*event.Event) error {
		entered <- struct{}{}
		<-ctx.Done()
		handlerErr <- ctx.Err()
		return ctx.Err()
	})
	go putIgnoringErrors(base2+"/_matrix/app/v1/transactions/9", reg.ServerToken)
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := srv2.stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("stop past its deadline = %v, want DeadlineExceeded", err)
	}
	select {
	case err := <-handlerErr:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the handler's context ended with %v", err)
		}
	case <-time.After(wait):
		t.Fatal("the handler's context did not end")
	}
}

// putIgnoringErrors sends a transaction from a goroutine that may outlive
// the test's server.
func putIgnoringErrors(u, token string) {
	req, _ := http.NewRequest("PUT", u, strings.NewReader(txnBody))
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
}

func TestASServerListenInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	o := asOptions()
	b := newTestASBridge(t, "mx", openTestStore(t), o, testRegistration(o))
	o.Listen = ln.Addr().String()
	err = b.newServer(nil).start()
	if err == nil || !strings.Contains(err.Error(), "connectors.mx.listen") {
		t.Errorf("start on a used port = %v, want a hint to change connectors.mx.listen", err)
	}
}

// TestASServerSkipsEchoes: a transaction holding only the bridge's own
// messages coming back is answered without being handled or recorded
// (a commit a relayed message, issue 17); one with anything else, a
// ghost's membership included, is handled and recorded as before.
func TestASServerSkipsEchoes(t *testing.T) {
	o := asOptions()
	reg := testRegistration(o)
	store := openTestStore(t)
	b := newTestASBridge(t, "mx", store, o, reg)
	var handled atomic.Int32
	_, base := startServer(t, b, func(context.Context, string, []*event.Event) error {
		handled.Add(1)
		return nil
	})
	recorded := func() int {
		var n int
		if err := store.QueryRow(`SELECT COUNT(*) FROM matrix_as_txns WHERE connector = 'mx'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	ghost, bot := "@"+o.GhostPrefix+"1:"+o.Domain, "@"+o.BotLocalpart+":"+o.Domain
	echoes := fmt.Sprintf(`{"events":[
		{"type":"m.room.message","event_id":"$g","room_id":"!r:example.org","sender":%q,"origin_server_ts":1,"content":{"msgtype":"m.text","body":"from the phone"}},
		{"type":"m.room.message","event_id":"$b","room_id":"!r:example.org","sender":%q,"origin_server_ts":2,"content":{"msgtype":"m.notice","body":"a notice"}}]}`, ghost, bot)
	if r := call(t, "PUT", base+"/_matrix/app/v1/transactions/1", reg.ServerToken, echoes); r.status != 200 || r.body != "{}\n" {
		t.Fatalf("echoes: %d %s", r.status, r.body)
	}
	if n, rows := handled.Load(), recorded(); n != 0 || rows != 0 {
		t.Fatalf("echoes: handled %d times, %d transactions recorded; want neither", n, rows)
	}
	joined := fmt.Sprintf(`{"events":[{"type":"m.room.member","state_key":%q,"event_id":"$j","room_id":"!r:example.org","sender":%q,"origin_server_ts":3,"content":{"membership":"leave"}}]}`, ghost, ghost)
	for i, body := range []string{joined, txnBody} {
		path := fmt.Sprintf("/_matrix/app/v1/transactions/%d", i+2)
		if r := call(t, "PUT", base+path, reg.ServerToken, body); r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
	}
	if n, rows := handled.Load(), recorded(); n != 2 || rows != 2 {
		t.Fatalf("a ghost's membership and the owner's message: handled %d times, %d transactions recorded; want 2 and 2", n, rows)
	}
}
