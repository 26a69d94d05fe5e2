package matrix

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/bridgetest"
	"github.com/phonebridge/phonebridge/config"
)

func TestClassifyHomeserverErrors(t *testing.T) {
	f := newFakeHS(t)
	s := &roomSender{cli: f.client(t), room: "!r:example.org", self: fakeUser}
	tests := []struct {
		name      string
		status    int
		body      string
		permanent bool
		wait      time.Duration // the rate limit's wait, for rate limits
		says      string
	}{
		{"rate limit", 429, `{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests","retry_after_ms":1500}`, false, 1500 * time.Millisecond, "rate-limits"},
		{"rate limit without a wait", 429, `{"errcode":"M_LIMIT_EXCEEDED","error":"slow down"}`, false, defaultRateLimitWait, "rate-limits"},
		{"not in room", 403, `{"errcode":"M_FORBIDDEN","error":"user not in room"}`, true, 0, "user not in room"},
		{"bad gateway", 502, `<html>bad gateway</html>`, false, 0, "HTTP 502"},
		{"server error", 500, `{"errcode":"M_UNKNOWN","error":"database is locked"}`, false, 0, "database is locked"},
		{"bad json", 400, `{"errcode":"M_BAD_JSON","error":"content is not valid"}`, true, 0, "content is not valid"},
		{"too large", 413, `{"errcode":"M_TOO_LARGE","error":"event too large"}`, true, 0, "event too large"},
		{"token revoked", 401, `{"errcode":"M_UNKNOWN_TOKEN","error":"Unknown token"}`, false, 0, "access token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.setAnswer(func(*fakeRequest) (int, string) { return tc.status, tc.body })
			_, err := s.send(t.Context(), outgoing("x", nil))
			if err == nil {
				t.Fatal("no error")
			}
			if bridge.IsPermanent(err) != tc.permanent {
				t.Errorf("permanent = %v, want %v: %v", bridge.IsPermanent(err), tc.permanent, err)
			}
			if !strings.Contains(err.Error(), tc.says) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q should say %q on one line", err, tc.says)
			}
			var httpErr mautrix.HTTPError
			if !errors.As(err, &httpErr) {
				t.Fatalf("the homeserver's error is lost: %v", err)
			}
			if tc.wait > 0 {
				if got := retryAfter(httpErr); got != tc.wait {
					t.Errorf("rate limit wait %v, want %v", got, tc.wait)
				}
			}
		})
	}

	f.srv.Close()
	_, err := s.send(t.Context(), outgoing("x", nil))
	if err == nil || bridge.IsPermanent(err) {
		t.Errorf("homeserver down: %v, want a transient error", err)
	}
}

// TestRateLimitWaitsAsAsked runs the connector under the real core: a send
// refused with retry_after_ms is retried no sooner than asked, although
// the core's own back-off is far shorter.
func TestRateLimitWaitsAsAsked(t *testing.T) {
	f := newFakeHS(t)
	const asked = 600 * time.Millisecond
	limited := true
	f.setAnswer(func(*fakeRequest) (int, string) {
		if limited {
			limited = false
			return 429, `{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests","retry_after_ms":600}`
		}
		return 0, ""
	})
	src := startCore(t, newFakeBot(t, f))
	if err := src.Inject(t.Context(), bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{ID: "general"}, ID: "m1", Sender: bridge.Sender{Name: "Ann"}, Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the retried send", func() bool { return len(f.requests()) >= 2 })
	reqs := f.requests()
	if gap := reqs[1].At.Sub(reqs[0].At); gap < asked {
		t.Errorf("retried after %v, before the %v the homeserver asked for", gap, asked)
	}
	if reqs[0].Txn != reqs[1].Txn {
		t.Errorf("the retry used transaction %q, the first %q: a redelivery must reuse it", reqs[1].Txn, reqs[0].Txn)
	}
}

func TestNotInRoomIsReportedOncePerRoom(t *testing.T) {
	f := newFakeHS(t)
	f.joined = []string{"!in:example.org"}
	f.setAnswer(func(*fakeRequest) (int, string) {
		return 403, `{"errcode":"M_FORBIDDEN","error":"eventauth: sender not in room"}`
	})
	c, sink := startFakeBot(t, f)
	send := func(room string) error {
		_, err := c.Send(t.Context(), &bridge.Outgoing{Event: bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{ID: room}, Text: "x"}, Key: "pb.x"})
		return err
	}
	for i := 0; i < 3; i++ {
		if err := send("!out:example.org"); !bridge.IsPermanent(err) {
			t.Fatalf("send %d to a room the bot is not in: %v, want a permanent error", i, err)
		}
	}
	notices := sink.noticeList()
	if len(notices) != 1 || !strings.Contains(notices[0], "!out:example.org") || !strings.Contains(notices[0], "invite") {
		t.Fatalf("notices %q, want one saying the bot is not in !out:example.org and what to do", notices)
	}
	// Forbidden for another reason (power levels) in a room it is in:
	// permanent, but no membership notice.
	if err := send("!in:example.org"); !bridge.IsPermanent(err) || !strings.Contains(err.Error(), "not in room") {
		t.Errorf("forbidden in a joined room: %v", err)
	}
	if n := len(sink.noticeList()); n != 1 {
		t.Errorf("%d notices, want still 1", n)
	}
}

// startCore runs the real core with c (not yet started) and a fake
// origin "src", routing src/general to room !r:example.org.
func startCore(t *testing.T, c *Connector) *bridgetest.Fake {
	t.Helper()
	cfg := config.Defaults()
	cfg.Delivery.RetryMin = 10 * time.Millisecond
	cfg.Delivery.RetryMax = 20 * time.Millisecond
	cfg.Delivery.SendTimeout = 5 * time.Second
	cfg.Routes = []config.Route{bridgetest.Route("r", "src/general", "mx/!r:example.org")}
	src := bridgetest.NewFake("src", bridgetest.AllCaps)
	runCore(t, c, src, &cfg)
	waitFor(t, "the bot to log in", func() bool { return c.client() != nil })
	return src
}

// runCore starts the real core between src and c until the test ends.
func runCore(t *testing.T, c *Connector, src *bridgetest.Fake, cfg *config.Config) *bridge.Bridge {
	t.Helper()
	b := bridge.New(c.store, map[string]bridge.Connector{"src": src, "mx": c}, cfg, c.log)
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), botWait)
		defer cancel()
		if err := b.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	return b
}

// TestRoutedRoomNotJoinedYetIsJoinedNotDropped: a message for a routed
// room the bot has not joined yet (the joiner still at it at start) is a
// transient failure that gets the room joined, not a dropped message.
func TestRoutedRoomNotJoinedYetIsJoinedNotDropped(t *testing.T) {
	f := newFakeHS(t)
	tried := false
	f.setAnswer(func(r *fakeRequest) (int, string) {
		f.mu.Lock()
		in := slices.Contains(f.joined, r.Room)
		tried = true
		f.mu.Unlock()
		if !in {
			return 403, `{"errcode":"M_FORBIDDEN","error":"eventauth: sender not in room"}`
		}
		return 0, ""
	})
	// The joiner's pass at login may see the route below before the
	// first send; the room lets it in only once that send was tried.
	f.mu.Lock()
	f.joinAnswer = func(string) (int, string) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if !tried {
			return 429, `{"errcode":"M_LIMIT_EXCEEDED","error":"slow down","retry_after_ms":10}`
		}
		return 0, ""
	}
	f.mu.Unlock()
	c, sink := startFakeBot(t, f)
	// The joiner gets the route only after this first send is tried.
	send := func() error {
		_, err := c.Send(t.Context(), &bridge.Outgoing{Event: bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{ID: "!new:example.org"}, Text: "x"}, Key: "pb.new"})
		return err
	}
	c.mu.Lock()
	c.routed = []string{"!new:example.org"}
	c.mu.Unlock()
	if err := send(); err == nil || bridge.IsPermanent(err) || !strings.Contains(err.Error(), "joining it first") {
		t.Fatalf("a send to a routed room not joined yet: %v, want a transient error", err)
	}
	waitFor(t, "the bot to join the routed room", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return slices.Contains(f.joined, "!new:example.org")
	})
	if err := send(); err != nil {
		t.Errorf("the retry after the join: %v", err)
	}
	if n := len(sink.noticeList()); n != 0 {
		t.Errorf("%d notices, want none: nothing was wrong for long", n)
	}
}
