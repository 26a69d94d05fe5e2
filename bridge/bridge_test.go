package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/bridgetest"
	"github.com/phonebridge/phonebridge/config"
)

var all = bridgetest.AllCaps

func msg(conn, chat, id, text string) bridge.Event {
	return bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: conn, ID: chat}, ID: id, Sender: bridge.Sender{ID: "u-" + conn, Name: "Ann"}, Text: text}
}

func act(kind bridge.Kind, conn, chat, id, target string) bridge.Event {
	return bridge.Event{Kind: kind, Chat: bridge.ChatRef{Connector: conn, ID: chat}, ID: id, Sender: bridge.Sender{ID: "u-" + conn, Name: "Ann"}, Target: target}
}

func texts(out []bridge.Outgoing) []string {
	var s []string
	for _, o := range out {
		s = append(s, o.Text)
	}
	return s
}

func TestFanOutReachesEveryOtherEndpointNeverTheOrigin(t *testing.T) {
	a, b, c := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all), bridgetest.NewFake("c", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y", "c/z")}, a, b, c)
	h.Inject(msg("a", "x", "1", "hello"))
	for _, f := range []*bridgetest.Fake{b, c} {
		got := f.WaitSent(t, 1)
		if got[0].Text != "hello" || got[0].Origin.Connector != "a" || got[0].Origin.ID != "x" {
			t.Errorf("%s got %+v", f.Name(), got[0])
		}
	}
	if got := b.Sent()[0].Chat; got.Connector != "b" || got.ID != "y" {
		t.Errorf("destination chat = %+v, want b/y", got)
	}
	h.Inject(msg("b", "y", "2", "back"))
	a.WaitSent(t, 1)
	c.WaitSent(t, 2)
	if n := len(b.Sent()); n != 1 {
		t.Errorf("origin b was sent its own message back: %v", texts(b.Sent()))
	}
}

func TestDirections(t *testing.T) {
	a, b, c := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all), bridgetest.NewFake("c", all)
	route := config.Route{Name: "r", Endpoints: []config.Endpoint{
		{Connector: "a", Chat: "x", Direction: config.Both},
		{Connector: "b", Chat: "y", Direction: config.In},  // only feeds the route
		{Connector: "c", Chat: "z", Direction: config.Out}, // only receives
	}}
	h := bridgetest.New(t, []config.Route{route}, a, b, c)
	h.Inject(msg("b", "y", "1", "from in"))
	a.WaitSent(t, 1)
	c.WaitSent(t, 1)
	h.Inject(msg("a", "x", "2", "from both"))
	c.WaitSent(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Inject(ctx, msg("c", "z", "3", "from out")); !errors.Is(err, bridge.ErrNoRoute) {
		t.Errorf("event from an out-only endpoint: err = %v, want ErrNoRoute", err)
	}
	h.Inject(msg("a", "x", "4", "marker"))
	c.WaitSent(t, 3)
	if n := len(b.Sent()); n != 0 {
		t.Errorf("in-only endpoint b received %v", texts(b.Sent()))
	}
	if got := texts(a.Sent()); len(got) != 1 || got[0] != "from in" {
		t.Errorf("a received %v, want only [from in]", got)
	}
}

func TestSharedEndpointDoesNotLoopOrDoubleDeliver(t *testing.T) {
	a, b, c := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all), bridgetest.NewFake("c", all)
	h := bridgetest.New(t, []config.Route{
		bridgetest.Route("one", "a/x", "b/y"),
		bridgetest.Route("two", "b/y", "c/z"),
		bridgetest.Route("three", "a/x", "b/y", "c/z"), // overlaps both
	}, a, b, c)
	h.Inject(msg("a", "x", "1", "hi"))
	b.WaitSent(t, 1)
	c.WaitSent(t, 1)

	// b's platform echoes the copy the bridge made there: it must not
	// come back into any route.
	echo := b.Sent()[0]
	h.Inject(bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: "b", ID: "y"}, ID: "b-1", Text: echo.Text})

	h.Inject(msg("a", "x", "2", "marker"))
	b.WaitSent(t, 2)
	c.WaitSent(t, 2)
	if got := texts(b.Sent()); strings.Join(got, ",") != "hi,marker" {
		t.Errorf("b got %v", got)
	}
	if got := texts(c.Sent()); strings.Join(got, ",") != "hi,marker" {
		t.Errorf("c got %v (echo relayed or doubled)", got)
	}
	if n := len(a.Sent()); n != 0 {
		t.Errorf("origin a got %v", texts(a.Sent()))
	}
}

func TestDuplicateInboundIsRelayedOnce(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	h.Inject(msg("a", "x", "same", "once"))
	h.Inject(msg("a", "x", "same", "once"))
	h.Restart()
	h.Inject(msg("a", "x", "same", "once"))
	h.Inject(msg("a", "x", "other", "marker"))
	got := b.WaitSent(t, 2)
	if strings.Join(texts(got), ",") != "once,marker" {
		t.Errorf("got %v, want once,marker", texts(got))
	}
}

func TestPerChatOrderWithTransientFailures(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	var calls atomic.Int64
	b.FailWith(func(out *bridge.Outgoing) error {
		if calls.Add(1)%7 == 0 {
			return fmt.Errorf("flaky server")
		}
		return nil
	})
	const n = 200
	for i := 0; i < n; i++ {
		h.Inject(msg("a", "x", fmt.Sprint(i), fmt.Sprint(i)))
	}
	got := b.WaitSent(t, n)
	for i, o := range got {
		if o.Text != fmt.Sprint(i) {
			t.Fatalf("position %d has %q: order broken: %v", i, o.Text, texts(got))
		}
	}
	if len(got) != n {
		t.Errorf("got %d events, want %d", len(got), n)
	}
}

func TestSlowChatDoesNotHoldOthers(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{
		bridgetest.Route("slow", "a/x1", "b/slow"),
		bridgetest.Route("fast", "a/x2", "b/fast"),
	}, a, b)
	release := make(chan struct{})
	b.FailWith(func(out *bridge.Outgoing) error {
		if out.Chat.ID == "slow" {
			<-release
		}
		return nil
	})
	h.Inject(msg("a", "x1", "s1", "stuck"))
	for i := 0; i < 5; i++ {
		h.Inject(msg("a", "x2", fmt.Sprint("f", i), fmt.Sprint("fast", i)))
	}
	got := b.WaitSent(t, 5)
	for _, o := range got {
		if o.Chat.ID != "fast" {
			t.Errorf("unexpected delivery %+v", o)
		}
	}
	close(release)
	b.WaitSent(t, 6)
}

func TestIDsRewrittenForReplyEditDeleteReaction(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	h.Inject(msg("a", "x", "A1", "first"))
	b.WaitSent(t, 1) // b-1 is the copy of A1

	reply := msg("a", "x", "A2", "answer")
	reply.ReplyTo = "A1"
	h.Inject(reply)
	edit := act(bridge.KindEdit, "a", "x", "A3", "A1")
	edit.Text = "first (fixed)"
	h.Inject(edit)
	react := act(bridge.KindReaction, "a", "x", "A4", "A1")
	react.Emoji = "👍"
	h.Inject(react)
	unreact := act(bridge.KindReactionRemove, "a", "x", "A5", "A1")
	unreact.Emoji = "👍"
	h.Inject(unreact)
	h.Inject(act(bridge.KindDelete, "a", "x", "A6", "A2"))

	got := b.WaitSent(t, 6)
	check := func(i int, kind bridge.Kind, field, want string) {
		t.Helper()
		o := got[i]
		var have string
		switch field {
		case "reply":
			have = o.ReplyTo
		case "target":
			have = o.Target
		case "reaction":
			have = o.TargetReaction
		}
		if o.Kind != kind || have != want {
			t.Errorf("event %d: kind %s %s=%q, want %s %q", i, o.Kind, field, have, kind, want)
		}
	}
	check(1, bridge.KindMessage, "reply", "b-1")
	check(2, bridge.KindEdit, "target", "b-1")
	check(3, bridge.KindReaction, "target", "b-1")
	check(4, bridge.KindReactionRemove, "target", "b-1")
	check(4, bridge.KindReactionRemove, "reaction", "b-4") // the reaction's own copy
	check(5, bridge.KindDelete, "target", "b-2")

	// The other way: b's users act on the copies; a sees its own ids.
	breact := act(bridge.KindReaction, "b", "y", "B1", "b-1")
	breact.Emoji = "❤"
	h.Inject(breact)
	// Removing a reaction by deleting it (as Matrix redacts) is a removal.
	h.Inject(act(bridge.KindDelete, "b", "y", "B2", "B1"))
	back := a.WaitSent(t, 2)
	if back[0].Kind != bridge.KindReaction || back[0].Target != "A1" {
		t.Errorf("reaction from b: %+v, want target A1", back[0])
	}
	if back[1].Kind != bridge.KindReactionRemove || back[1].Target != "A1" || back[1].TargetReaction != "a-1" || back[1].Emoji != "❤" {
		t.Errorf("delete of a reaction: %+v, want reaction_remove of ❤ on A1 (reaction a-1)", back[1])
	}
}

func TestMapSurvivesRestart(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	h.Inject(msg("a", "x", "A1", "before restart"))
	b.WaitSent(t, 1)
	// Wait for the delivery's bookkeeping to commit before restarting.
	h.Inject(msg("a", "x", "A2", "marker"))
	b.WaitSent(t, 2)
	h.Restart()
	edit := act(bridge.KindEdit, "a", "x", "A3", "A1")
	edit.Text = "after restart"
	h.Inject(edit)
	got := b.WaitSent(t, 3)
	if got[2].Kind != bridge.KindEdit || got[2].Target != "b-1" {
		t.Errorf("edit after restart: %+v, want target b-1", got[2])
	}
	// And a reply from b to the copy reaches a as a reply to A1.
	r := msg("b", "y", "B1", "re")
	r.ReplyTo = "b-1"
	h.Inject(r)
	if got := a.WaitSent(t, 1); got[0].ReplyTo != "A1" {
		t.Errorf("reply from b after restart: reply_to %q, want A1", got[0].ReplyTo)
	}
}

func TestOutboxSurvivesRestartAndKeepsOrder(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	b.FailWith(func(*bridge.Outgoing) error { return errors.New("down") })
	for i := 0; i < 10; i++ {
		h.Inject(msg("a", "x", fmt.Sprint(i), fmt.Sprint(i)))
	}
	h.Restart()
	b.FailWith(nil)
	b.Resume("")
	got := b.WaitSent(t, 10)
	if strings.Join(texts(got), ",") != "0,1,2,3,4,5,6,7,8,9" {
		t.Errorf("after restart got %v", texts(got))
	}
}

func TestPermanentFailureIsSkippedAndRecorded(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	b.FailWith(func(out *bridge.Outgoing) error {
		if out.Text == "too big" {
			return bridge.Permanentf("event too large")
		}
		return nil
	})
	h.Inject(msg("a", "x", "1", "one"))
	h.Inject(msg("a", "x", "2", "too big"))
	h.Inject(msg("a", "x", "3", "three"))
	got := b.WaitSent(t, 2)
	if strings.Join(texts(got), ",") != "one,three" {
		t.Errorf("got %v", texts(got))
	}
	var failed int
	var reason string
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		err := h.Store.DB().QueryRow(`SELECT COUNT(*), COALESCE(MAX(last_error), '') FROM outbox WHERE failed = 1`).Scan(&failed, &reason)
		if err != nil {
			t.Fatal(err)
		}
		if failed == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if failed != 1 || !strings.Contains(reason, "too large") {
		t.Errorf("failed rows = %d (%q), want 1 recorded with its reason", failed, reason)
	}
}

func TestTransientFailureRetriedWithBackoff(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	var attempts []time.Time
	b.FailWith(func(*bridge.Outgoing) error {
		attempts = append(attempts, time.Now())
		if len(attempts) <= 4 {
			return errors.New("homeserver restarting")
		}
		return nil
	})
	h.Inject(msg("a", "x", "1", "eventually"))
	b.WaitSent(t, 1)
	if len(attempts) != 5 {
		t.Fatalf("attempts = %d, want 5", len(attempts))
	}
	// retry_min is 10ms, doubling to a 100ms cap, jittered to [d/2, d].
	wantMin := []time.Duration{5, 10, 20, 40}
	for i := 1; i < len(attempts); i++ {
		gap := attempts[i].Sub(attempts[i-1])
		if gap < wantMin[i-1]*time.Millisecond {
			t.Errorf("retry %d came after %v, before its backoff of at least %v", i, gap, wantMin[i-1]*time.Millisecond)
		}
	}
}

func TestRetryAfterIsObeyedAndResumeCutsBackoffShort(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	var n atomic.Int64
	b.FailWith(func(*bridge.Outgoing) error {
		if n.Add(1) == 1 {
			return bridge.RetryAfter(time.Hour, errors.New("M_LIMIT_EXCEEDED"))
		}
		return nil
	})
	h.Inject(msg("a", "x", "1", "limited"))
	// First the refusal, and the hour's wait recorded for the delivery.
	var next int64
	waitFor(t, func() bool {
		err := h.Store.DB().QueryRow(`SELECT next_attempt_at FROM outbox`).Scan(&next)
		return n.Load() >= 1 && err == nil && next > 0
	})
	if wait := time.Until(time.UnixMilli(next)); wait < 59*time.Minute {
		t.Errorf("the next attempt is due in %v, want the hour the destination asked for", wait)
	}
	// Retries here come within 100 ms (retry_max): 300 ms without one
	// shows the wait obeyed.
	time.Sleep(300 * time.Millisecond)
	if got := n.Load(); got != 1 || len(b.Sent()) != 0 {
		t.Fatalf("%d attempts, %d sent before the requested wait; want the one refused", got, len(b.Sent()))
	}
	b.Resume("y")
	b.WaitSent(t, 1)
}

func TestFallbacksForMissingCapabilities(t *testing.T) {
	a := bridgetest.NewFake("a", all)
	plain := bridgetest.NewFake("plain", bridge.Capabilities{})
	a.SetMedia("pic1", "PNGDATA")
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "plain/p")}, a, plain)

	first := msg("a", "x", "A1", "original text")
	first.HTML = "<b>original</b> text"
	h.Inject(first)
	reply := msg("a", "x", "A2", "yes")
	reply.ReplyTo = "A1"
	h.Inject(reply)
	edit := act(bridge.KindEdit, "a", "x", "A3", "A1")
	edit.Text = "fixed"
	h.Inject(edit)
	react := act(bridge.KindReaction, "a", "x", "A4", "A1")
	react.Emoji = "👍"
	h.Inject(react)
	h.Inject(act(bridge.KindDelete, "a", "x", "A5", "A1"))
	media := msg("a", "x", "A6", "")
	media.Media = []bridge.Media{{MIME: "image/png", Name: "cat.png", Size: 2048, Ref: "pic1"}}
	h.Inject(media)

	got := plain.WaitSent(t, 6)
	want := []string{
		"original text",
		"> Ann: original text\nyes",
		"> Ann: original text\n✎ fixed",
		"Ann reacted 👍 to “fixed”",
		"Ann deleted a message",
		"[image: cat.png, 2.0 KB]",
	}
	for i, w := range want {
		if got[i].Text != w {
			t.Errorf("event %d: %q, want %q", i, got[i].Text, w)
		}
		if got[i].HTML != "" || got[i].ReplyTo != "" || got[i].Target != "" || len(got[i].Media) != 0 {
			t.Errorf("event %d carries what plain cannot show: %+v", i, got[i])
		}
		if got[i].Kind != bridge.KindMessage {
			t.Errorf("event %d kind %s, want message", i, got[i].Kind)
		}
	}
	if !got[3].Notice || !got[4].Notice {
		t.Error("reaction and delete fallbacks should be notices")
	}
}

func TestFallbackDropsWhenConfigured(t *testing.T) {
	a, plain := bridgetest.NewFake("a", all), bridgetest.NewFake("plain", bridge.Capabilities{})
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "plain/p")}, a, plain)
	h.Config.Relay = config.Relay{Edits: "drop", Reactions: "drop", Deletes: "drop"}
	h.Restart()
	h.Inject(msg("a", "x", "A1", "hello"))
	e := act(bridge.KindEdit, "a", "x", "A2", "A1")
	e.Text = "x"
	h.Inject(e)
	r := act(bridge.KindReaction, "a", "x", "A3", "A1")
	r.Emoji = "👍"
	h.Inject(r)
	h.Inject(act(bridge.KindDelete, "a", "x", "A4", "A1"))
	h.Inject(msg("a", "x", "A5", "marker"))
	got := plain.WaitSent(t, 2)
	if strings.Join(texts(got), ",") != "hello,marker" {
		t.Errorf("got %v, want hello,marker", texts(got))
	}
}

func TestMediaOpenedThroughOrigin(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	a.SetMedia("r1", "bytes of the photo")
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	m := msg("a", "x", "A1", "")
	m.Media = []bridge.Media{{MIME: "image/jpeg", Name: "p.jpg", Caption: "look", Ref: "r1"}}
	h.Inject(m)
	got := b.WaitSent(t, 1)
	if got[0].Media[0].Caption != "look" || b.MediaBytes("b-1") != "bytes of the photo" {
		t.Errorf("media not carried: %+v, bytes %q", got[0].Media, b.MediaBytes("b-1"))
	}
}

func TestSplitMessageDeletedPartByPart(t *testing.T) {
	a := bridgetest.NewFake("a", all)
	short := bridgetest.NewFake("short", bridge.Capabilities{Deletes: true, Replies: true, MaxTextLength: 10})
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "short/s")}, a, short)
	h.Inject(msg("a", "x", "A1", "aaaa bbbb cccc dddd"))
	parts := short.WaitSent(t, 2)
	if parts[0].Text != "aaaa bbbb" || parts[1].Text != "cccc dddd" || parts[0].Key == parts[1].Key {
		t.Errorf("split into %q (key %s), %q (key %s)", parts[0].Text, parts[0].Key, parts[1].Text, parts[1].Key)
	}
	h.Inject(act(bridge.KindDelete, "a", "x", "A2", "A1"))
	got := short.WaitSent(t, 4)
	if got[2].Target != "short-1" || got[3].Target != "short-2" {
		t.Errorf("deletes target %q, %q; want short-1, short-2", got[2].Target, got[3].Target)
	}
}

func TestEphemeralTypingIsRelayedNotStored(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	h.Inject(bridge.Event{Kind: bridge.KindTyping, Chat: bridge.ChatRef{Connector: "a", ID: "x"}, Sender: bridge.Sender{Name: "Ann"}})
	got := b.WaitSent(t, 1)
	if got[0].Kind != bridge.KindTyping {
		t.Errorf("got %+v", got[0])
	}
	var n int
	if err := h.Store.DB().QueryRow(`SELECT COUNT(*) FROM outbox`).Scan(&n); err != nil || n != 0 {
		t.Errorf("typing stored in the outbox: %d rows, %v", n, err)
	}
}

func TestInvalidAndUnroutedEventsAreRefused(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	ctx := context.Background()
	if err := a.Inject(ctx, msg("a", "nowhere", "1", "hi")); !errors.Is(err, bridge.ErrNoRoute) {
		t.Errorf("unrouted: %v", err)
	}
	if err := a.Inject(ctx, act(bridge.KindEdit, "a", "x", "2", "")); err == nil || !strings.Contains(err.Error(), "target") {
		t.Errorf("edit without target: %v", err)
	}
	if err := a.Inject(ctx, bridge.Event{Kind: "shout", Chat: bridge.ChatRef{ID: "x"}}); err == nil {
		t.Error("unknown kind accepted")
	}
}

// A destination that stalls while more events arrive than a queue keeps in
// memory: the overflow waits in the outbox and everything still arrives
// once, in order.
func TestQueueOverflowSpillsToOutboxInOrder(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	h.Inject(msg("a", "x", "first", "first"))
	b.WaitSent(t, 1)
	release := b.Block()
	const n = 1500 // well over the in-memory limit per queue
	for i := 0; i < n; i++ {
		h.Inject(msg("a", "x", fmt.Sprint(i), fmt.Sprint(i)))
	}
	release()
	got := b.WaitSent(t, n+1)
	if len(got) != n+1 {
		t.Fatalf("got %d events, want %d", len(got), n+1)
	}
	for i, o := range got[1:] {
		if o.Text != fmt.Sprint(i) {
			t.Fatalf("position %d holds %q: order broken or events repeated", i, o.Text)
		}
	}
}

// Stopping while a send hangs returns within the deadline and leaves the
// event in the outbox; the next start delivers it.
func TestStopWithASendInFlightKeepsTheEvent(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	// The send that hangs then fails (its connection died), so only a
	// redelivery after the restart can deliver the event.
	var calls atomic.Int64
	b.FailWith(func(*bridge.Outgoing) error {
		if calls.Add(1) == 1 {
			return errors.New("connection reset")
		}
		return nil
	})
	release := b.Block()
	h.Inject(msg("a", "x", "1", "in flight"))
	b.WaitBlocked(t)
	start := time.Now()
	err := h.Stop(300 * time.Millisecond)
	if took := time.Since(start); took > time.Second {
		t.Errorf("stop took %v with a 300ms deadline", took)
	}
	// The unanswered send is cancelled: the stop is not an error (a
	// silent destination is not the daemon's failure), but it is not
	// marked clean either, so the restart checks before resending.
	if err != nil {
		t.Errorf("stop error = %v, want none: the send in flight is cancelled and its event kept", err)
	}
	if h.Logs.Count("stopped with deliveries unanswered") != 1 {
		t.Errorf("no warning about the unanswered delivery in the log")
	}
	release()
	h.Start()
	got := b.WaitSent(t, 1)
	if got[0].Text != "in flight" || !got[0].MaybeSent {
		t.Errorf("after restart got %+v, want the event flagged MaybeSent", got[0])
	}
}

// SetRoutes (a config reload) changes where new events go, at once.
func TestSetRoutesAppliesToNewEvents(t *testing.T) {
	a, b, c := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all), bridgetest.NewFake("c", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b, c)
	h.Inject(msg("a", "x", "1", "before"))
	b.WaitSent(t, 1)
	if err := h.Bridge.SetRoutes(context.Background(), []config.Route{bridgetest.Route("r", "a/x", "c/z")}); err != nil {
		t.Fatal(err)
	}
	h.Inject(msg("a", "x", "2", "after"))
	if got := c.WaitSent(t, 1); got[0].Text != "after" {
		t.Errorf("c got %+v", got[0])
	}
	h.Inject(msg("a", "x", "3", "marker"))
	c.WaitSent(t, 2)
	if n := len(b.Sent()); n != 1 {
		t.Errorf("b still receives after the route changed: %v", texts(b.Sent()))
	}
}

func TestStatusReportsConnectorStates(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	st := h.Bridge.Status()
	for _, name := range []string{"a", "b"} {
		if st[name].State != bridge.StateConnected || st[name].Since.IsZero() {
			t.Errorf("%s: %+v, want connected with a time", name, st[name])
		}
	}
}

// chats: all carries every chat of one connector to the chat with the same
// id on another (a connector keeping a chat per origin chat), both ways,
// beside a fixed endpoint.
func TestAllChatsRoutes(t *testing.T) {
	phone, api, log := bridgetest.NewFake("phone", all), bridgetest.NewFake("api", all), bridgetest.NewFake("log", all)
	route := bridgetest.Route("everything", "phone/*", "api/*")
	route.Endpoints = append(route.Endpoints, config.Endpoint{Connector: "log", Chat: "archive", Direction: config.Out})
	h := bridgetest.New(t, []config.Route{route}, phone, api, log)
	h.Inject(msg("phone", "123@s.whatsapp.net", "w1", "from a direct chat"))
	h.Inject(msg("phone", "456@g.us", "w2", "from a group"))
	got := api.WaitSent(t, 2)
	// Two chats deliver in parallel: their relative order is not fixed.
	if ids := []string{got[0].Chat.ID, got[1].Chat.ID}; !slices.Contains(ids, "123@s.whatsapp.net") || !slices.Contains(ids, "456@g.us") {
		t.Errorf("api chats %q; want the origin chats' ids", ids)
	}
	if l := log.WaitSent(t, 2); l[0].Chat.ID != "archive" {
		t.Errorf("fixed endpoint got chat %q", l[0].Chat.ID)
	}
	h.Inject(msg("api", "456@g.us", "a1", "answer"))
	back := phone.WaitSent(t, 1)
	if back[0].Chat.ID != "456@g.us" || back[0].Text != "answer" {
		t.Errorf("phone got %+v, want the answer in 456@g.us", back[0])
	}
	log.WaitSent(t, 3)
	if n := len(api.Sent()); n != 2 {
		t.Errorf("api got its own answer back: %v", texts(api.Sent()))
	}

	// A chat the phone cannot have (not a JID) is not relayed to it; the
	// fixed endpoint still gets it.
	phone.SetChatIDs(func(id string) bool { return strings.Contains(id, "@") })
	h.Inject(msg("api", "general", "a2", "not for the phone"))
	if l := log.WaitSent(t, 4); l[3].Text != "not for the phone" {
		t.Errorf("fixed endpoint got %q", l[3].Text)
	}
	h.Inject(msg("api", "456@g.us", "a3", "for the phone"))
	if back := phone.WaitSent(t, 2); back[1].Text != "for the phone" {
		t.Errorf("phone got %q after a chat it cannot have; want only chats it can", texts(back))
	}
}

// Routes may name chats; the connector resolves names before it starts, an
// unknown name fails the start with its path, and a name whose chat list
// is not there yet waits for ChatsChanged.
func TestRoutesResolveChatNames(t *testing.T) {
	phone, api := bridgetest.NewFake("phone", all), bridgetest.NewFake("api", all)
	phone.SetChats(map[string]string{"Family": "456@g.us"}, true)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "phone/Family", "api/fam")}, phone, api)
	h.Inject(msg("phone", "456@g.us", "w1", "by name"))
	if got := api.WaitSent(t, 1); got[0].Text != "by name" {
		t.Errorf("got %+v", got[0])
	}

	if err := h.Bridge.SetRoutes(context.Background(), []config.Route{bridgetest.Route("r", "phone/Famly", "api/fam")}); err == nil ||
		!strings.Contains(err.Error(), "routes[0].endpoints[0].chat") || !strings.Contains(err.Error(), `"Famly"`) {
		t.Errorf("unknown name: err = %v, want one naming routes[0].endpoints[0].chat", err)
	}

	phone.SetChats(map[string]string{"Work": "789@g.us"}, false) // e.g. not linked yet
	if err := h.Bridge.SetRoutes(context.Background(), []config.Route{bridgetest.Route("r", "phone/Work", "api/work")}); err != nil {
		t.Fatalf("a chat list not there yet must not be an error: %v", err)
	}
	if err := phone.Inject(context.Background(), msg("phone", "789@g.us", "w2", "too early")); !errors.Is(err, bridge.ErrNoRoute) {
		t.Errorf("before the chat list: %v, want no route", err)
	}
	phone.SetChats(map[string]string{"Work": "789@g.us"}, true)
	phone.Sink().ChatsChanged()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := phone.Inject(context.Background(), msg("phone", "789@g.us", "w3", "after"))
		if err == nil {
			break
		}
		if !errors.Is(err, bridge.ErrNoRoute) || time.Now().After(deadline) {
			t.Fatalf("after ChatsChanged: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := api.WaitSent(t, 2); got[1].Text != "after" || got[1].Chat.ID != "work" {
		t.Errorf("got %+v", got[1])
	}
}

func TestNoticesGoToTheConfiguredChat(t *testing.T) {
	phone, api := bridgetest.NewFake("phone", all), bridgetest.NewFake("api", all)
	h := bridgetest.New(t, nil, phone, api)
	h.Config.Notices = config.Notices{Connector: "api", Chat: "admin"}
	h.Restart()
	phone.Sink().Notice("WhatsApp link 'phone' was logged out from the phone — run `phonebridge link phone`")
	got := api.WaitSent(t, 1)
	if got[0].Chat.ID != "admin" || !got[0].Notice || !strings.Contains(got[0].Text, "logged out") || got[0].Origin.Connector != bridge.NoticeOrigin {
		t.Errorf("notice arrived as %+v", got[0])
	}
}

// WhatsApp removes a reaction without saying which: the core finds the
// sender's reaction and names it for destinations that need it.
func TestReactionRemovalWithoutEmoji(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	h.Inject(msg("a", "x", "A1", "hello"))
	react := act(bridge.KindReaction, "a", "x", "A2", "A1")
	react.Emoji = "🎉"
	h.Inject(react)
	h.Inject(act(bridge.KindReactionRemove, "a", "x", "A3", "A1"))
	got := b.WaitSent(t, 3)
	if got[2].Kind != bridge.KindReactionRemove || got[2].Emoji != "🎉" || got[2].TargetReaction != "b-2" || got[2].Target != "b-1" {
		t.Errorf("removal arrived as %+v", got[2])
	}
}

// WhatsApp keeps one reaction per person: a new one replaces the old.
// A destination with reactions loses the old as it gets the new; one
// that got the old as a notice sees that notice deleted; a sender's
// first reaction replaces nothing.
func TestAReactionReplacesTheSendersEarlierOne(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	notes := bridgetest.NewFake("notes", bridge.Capabilities{Deletes: true, Replies: true})
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y", "notes/z")}, a, b, notes)
	h.Inject(msg("a", "x", "A1", "hello"))
	for i, emoji := range []string{"👍", "❤"} {
		react := act(bridge.KindReaction, "a", "x", fmt.Sprintf("R%d", i), "A1")
		react.Emoji, react.ReplacesReaction = emoji, true
		h.Inject(react)
	}
	// Someone else's reaction stands beside them.
	other := act(bridge.KindReaction, "a", "x", "R9", "A1")
	other.Sender, other.Emoji, other.ReplacesReaction = bridge.Sender{ID: "u-bob", Name: "Bob"}, "😮", true
	h.Inject(other)

	got := b.WaitSent(t, 5)
	want := []struct {
		kind                    bridge.Kind
		emoji, target, reaction string
	}{
		{bridge.KindMessage, "", "", ""},
		{bridge.KindReaction, "👍", "b-1", ""},
		{bridge.KindReactionRemove, "", "b-1", "b-2"},
		{bridge.KindReaction, "❤", "b-1", ""},
		{bridge.KindReaction, "😮", "b-1", ""},
	}
	for i, w := range want {
		if g := got[i]; g.Kind != w.kind || g.Emoji != w.emoji || g.Target != w.target || g.TargetReaction != w.reaction {
			t.Errorf("b's send %d: %s %q on %q (reaction %q); want %s %q on %q (reaction %q)", i, g.Kind, g.Emoji, g.Target, g.TargetReaction, w.kind, w.emoji, w.target, w.reaction)
		}
	}
	n := notes.WaitSent(t, 5)
	if n[1].Kind != bridge.KindMessage || n[2].Kind != bridge.KindDelete || n[2].Target != "notes-2" || n[3].Kind != bridge.KindMessage || !strings.Contains(n[3].Text, "❤") {
		t.Errorf("the notice destination got %+v, want the 👍 notice deleted before the ❤ one", n)
	}
}

// A connector that joins its chats (a Matrix bot) learns which chats the
// routes name on it, before it starts and again when the routes change.
func TestRoutedChatsTold(t *testing.T) {
	phone, api := bridgetest.NewFake("phone", all), bridgetest.NewFake("api", all)
	routes := []config.Route{
		bridgetest.Route("a", "phone/*", "api/room2"),
		bridgetest.Route("b", "phone/456@g.us", "api/room1"),
		bridgetest.Route("c", "phone/789@g.us", "api/room1"),
	}
	h := bridgetest.New(t, routes, phone, api)
	got := api.Routed()
	if len(got) == 0 || !reflect.DeepEqual(got[len(got)-1], []string{"room1", "room2"}) {
		t.Fatalf("api was told %v, want [room1 room2] (each once, sorted)", got)
	}
	if p := phone.Routed(); len(p) == 0 || !reflect.DeepEqual(p[len(p)-1], []string{"456@g.us", "789@g.us"}) {
		t.Errorf("phone was told %v, want its two fixed chats (not the `all` endpoint)", p)
	}
	if err := h.Bridge.SetRoutes(context.Background(), []config.Route{bridgetest.Route("d", "phone/456@g.us", "api/room3")}); err != nil {
		t.Fatal(err)
	}
	if got := api.Routed(); !reflect.DeepEqual(got[len(got)-1], []string{"room3"}) {
		t.Errorf("after new routes api was told %v, want [room3]", got[len(got)-1])
	}
}

// Relative paths in a connector's options are relative to the config
// file, as the config's own paths are.
func TestEnvPath(t *testing.T) {
	cfg := &config.Config{Path: "/etc/phonebridge/config.yaml", StateDir: "/var/lib/phonebridge"}
	env := bridge.NewEnv(cfg, "matrix", nil, slog.New(slog.DiscardHandler))
	for in, want := range map[string]string{
		"registration.yaml": "/etc/phonebridge/registration.yaml",
		"sub/reg.yaml":      "/etc/phonebridge/sub/reg.yaml",
		"/abs/reg.yaml":     "/abs/reg.yaml",
		"":                  "",
		"../other/reg.yaml": "/etc/other/reg.yaml",
	} {
		if got := env.Path(in); got != want {
			t.Errorf("Path(%q) = %q, want %q", in, got, want)
		}
	}
	if env.Name != "matrix" || env.StateDir != cfg.StateDir || env.ConfigDir != "/etc/phonebridge" {
		t.Errorf("env %+v", env)
	}
	if got := bridge.NewEnv(&config.Config{}, "x", nil, slog.New(slog.DiscardHandler)).Path("a.yaml"); got != "a.yaml" {
		t.Errorf("without a config file: %q", got)
	}
}

// TestHistoryOnlyWhereItIsShown: a history event reaches destinations
// that show history, at its own time, and no other; a live message with
// the same id later is a duplicate (the history relayed it), and a reply
// to the history message finds it.
func TestHistoryOnlyWhereItIsShown(t *testing.T) {
	shows := all
	shows.History = true
	a, m, irc := bridgetest.NewFake("a", all), bridgetest.NewFake("m", shows), bridgetest.NewFake("irc", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "m/y", "irc/z")}, a, m, irc)
	old := msg("a", "x", "h1", "from the past")
	old.History, old.Time = true, time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	h.Inject(old)
	h.Inject(msg("a", "x", "h1", "from the past"))
	reply := msg("a", "x", "live", "answering")
	reply.ReplyTo = "h1"
	h.Inject(reply)
	got := m.WaitSent(t, 2)
	if !got[0].History || !got[0].Time.Equal(old.Time) || got[0].Text != "from the past" {
		t.Errorf("the destination showing history got %+v at %v", got[0], got[0].Time)
	}
	if got[1].History || got[1].Text != "answering" || got[1].ReplyTo == "" {
		t.Errorf("then %+v (history %v, reply to %q), want the live reply to the history message", got[1], got[1].History, got[1].ReplyTo)
	}
	if sent := irc.WaitSent(t, 1); len(sent) != 1 || sent[0].Text == "from the past" || sent[0].History {
		t.Errorf("a destination that does not show history got %v", texts(sent))
	}
}

// A shared location reaches a destination that shows places as it is,
// with the kind and length of a voice note; one that cannot show a place
// gets lines with a map link, and one without media hears of a voice
// message rather than a file.
func TestLocationsAndVoiceNotesFallBackPerDestination(t *testing.T) {
	a := bridgetest.NewFake("a", all)
	maps := all
	maps.Locations = true
	rich := bridgetest.NewFake("rich", maps)
	plain := bridgetest.NewFake("plain", bridge.Capabilities{Replies: true})
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "rich/y", "plain/z")}, a, rich, plain)

	where := &bridge.Location{Latitude: 52.5163, Longitude: 13.3777, Name: "Brandenburger Tor", Address: "Pariser Platz, Berlin"}
	m := msg("a", "x", "A1", "meet here")
	m.Location = where
	h.Inject(m)
	if got := rich.WaitSent(t, 1)[0]; got.Location == nil || *got.Location != *where || got.Text != "meet here" {
		t.Errorf("a destination that shows places got %+v, text %q", got.Location, got.Text)
	}
	want := "📍 Location: Brandenburger Tor\nPariser Platz, Berlin\nmeet here\nhttps://maps.google.com/?q=52.5163,13.3777"
	if got := plain.WaitSent(t, 1)[0]; got.Location != nil || got.Text != want {
		t.Errorf("a destination without places got %+v, text %q; want %q", got.Location, got.Text, want)
	}

	voice := msg("a", "x", "A2", "")
	a.SetMedia("v1", "opus bytes")
	voice.Media = []bridge.Media{{MIME: "audio/ogg; codecs=opus", Name: "voice.ogg", Size: 2048, Ref: "v1", Kind: bridge.MediaVoice, DurationMS: 3500, Waveform: []int{0, 512, 1024}}}
	h.Inject(voice)
	if got := rich.WaitSent(t, 2)[1].Media; len(got) != 1 || got[0].Kind != bridge.MediaVoice || got[0].DurationMS != 3500 || len(got[0].Waveform) != 3 {
		t.Errorf("a destination with media got %+v, want the voice note with its length and waveform", got)
	}
	if got := plain.WaitSent(t, 2)[1]; got.Text != "[voice message: voice.ogg, 2.0 KB]" {
		t.Errorf("a destination without media got %q", got.Text)
	}

	// A caption over a destination's length is split; the place goes once.
	short := bridgetest.NewFake("short", bridge.Capabilities{Locations: true, MaxTextLength: 10})
	h2 := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a2/x", "short/s")}, bridgetest.NewFake("a2", all), short)
	long := msg("a2", "x", "L1", "aaaa bbbb cccc dddd")
	long.Location = where
	h2.Inject(long)
	if parts := short.WaitSent(t, 2); parts[0].Location == nil || parts[1].Location != nil {
		t.Errorf("a long caption split into parts with places %v, %v; want the place on the first only", parts[0].Location, parts[1].Location)
	}

	// An event with a place off the Earth is refused, not relayed.
	bad := msg("a", "x", "A3", "")
	bad.Location = &bridge.Location{Latitude: 91, Longitude: 0}
	if err := a.Inject(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "not on Earth") {
		t.Errorf("a latitude of 91: %v", err)
	}
}

// A disappearing chat's message: its text, kept for quotes, is forgotten
// when it expires (not after keep_messages), while an ordinary message
// keeps its own; the id map stays, so replies still find their target.
func TestDisappearingMessagesTextIsForgottenAtExpiry(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	gone := msg("a", "x", "A1", "this disappears")
	gone.Time, gone.ExpiresInSec = time.Now(), 1
	h.Inject(gone)
	h.Inject(msg("a", "x", "A2", "this stays"))
	b.WaitSent(t, 2)
	text := func(id string) string {
		var s string
		if err := h.Store.DB().QueryRow(`SELECT text FROM messages WHERE origin_native = ?`, id).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got := text("A1"); got != "this disappears" {
		t.Fatalf("before its expiry the text is %q", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for text("A1") != "" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := text("A1"); got != "" {
		t.Errorf("10 s after its 1 s expiry the text is still %q", got)
	}
	if got := text("A2"); got != "this stays" {
		t.Errorf("an ordinary message's text became %q", got)
	}
	reply := msg("a", "x", "A3", "answer")
	reply.ReplyTo = "A1"
	h.Inject(reply)
	if got := b.WaitSent(t, 3)[2]; got.ReplyTo != "b-1" {
		t.Errorf("a reply to the expired message went as %+v, want a reply to b-1", got)
	}

	// An expiry pending across a restart is kept by the next start.
	later := msg("a", "x", "A4", "this disappears after a restart")
	later.Time, later.ExpiresInSec = time.Now(), 2
	h.Inject(later)
	b.WaitSent(t, 4)
	h.Restart()
	deadline = time.Now().Add(10 * time.Second)
	for text("A4") != "" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := text("A4"); got != "" {
		t.Errorf("after a restart, 10 s after its 2 s expiry the text is still %q", got)
	}
}

// A phone with the chat open reads a message as it arrives, before the
// delivery that sent it is recorded: the read still finds its message.
func TestAReadAsTheMessageArrivesFindsIt(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	release := b.Block()
	h.Inject(msg("a", "x", "A1", "read me"))
	b.WaitBlocked(t) // b has the message as b-1; the core does not know it yet
	read := bridge.Event{Kind: bridge.KindRead, Chat: bridge.ChatRef{Connector: "b", ID: "y"}, Sender: bridge.Sender{ID: "u-b"}, Target: "b-1"}
	if err := b.Inject(context.Background(), read); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // the read's first look finds nothing
	release()
	got := a.WaitSent(t, 1)
	if got[0].Kind != bridge.KindRead || got[0].Target != "A1" {
		t.Errorf("a got %+v, want the read of A1", got[0])
	}
}

// A poll reaches a destination that asks polls as one, and one that
// cannot as its question and numbered options; a malformed poll is
// refused.
func TestPollsFallBackToText(t *testing.T) {
	a := bridgetest.NewFake("a", all)
	pollCaps := all
	pollCaps.Polls = true
	polls := bridgetest.NewFake("polls", pollCaps)
	plain := bridgetest.NewFake("plain", bridge.Capabilities{})
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "polls/y", "plain/z")}, a, polls, plain)
	p := msg("a", "x", "P1", "")
	p.Poll = &bridge.Poll{Question: "Lunch?", Options: []string{"Pizza", "Sushi"}, Choices: 1}
	h.Inject(p)
	if got := polls.WaitSent(t, 1)[0]; got.Poll == nil || got.Poll.Question != "Lunch?" || len(got.Poll.Options) != 2 {
		t.Errorf("a destination with polls got %+v", got.Poll)
	}
	if got := plain.WaitSent(t, 1)[0]; got.Poll != nil || got.Text != "📊 Lunch?\n1. Pizza\n2. Sushi" {
		t.Errorf("a destination without polls got %q (%+v)", got.Text, got.Poll)
	}
	for _, bad := range []*bridge.Poll{
		{Question: "", Options: []string{"a", "b"}},
		{Question: "one?", Options: []string{"a"}},
		{Question: "blank?", Options: []string{"a", " "}},
		{Question: "too many picks?", Options: []string{"a", "b"}, Choices: 3},
	} {
		ev := msg("a", "x", "P2", "")
		ev.Poll = bad
		if err := a.Inject(context.Background(), ev); err == nil {
			t.Errorf("poll %+v accepted", bad)
		}
	}
}

// Votes: a destination with polls gets each vote aimed at its copy of the
// poll, with the poll's options and the count; one without gets the vote
// and the count in words answering the poll. A newer vote replaces the
// voter's earlier one in the count, the owner is one voter whichever
// platform they vote on, a withdrawn vote leaves the count, and a vote in
// a poll the bridge never saw asked goes nowhere.
func TestVotesAreCountedAndShown(t *testing.T) {
	a := bridgetest.NewFake("a", all)
	pollCaps := all
	pollCaps.Polls = true
	polls := bridgetest.NewFake("polls", pollCaps)
	plain := bridgetest.NewFake("plain", bridge.Capabilities{Replies: true})
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "polls/y", "plain/z")}, a, polls, plain)
	p := msg("a", "x", "P1", "")
	p.Poll = &bridge.Poll{Question: "Lunch?", Options: []string{"Pizza", "Sushi", "Soup"}}
	h.Inject(p)
	vote := func(id string, sender bridge.Sender, choices ...int) {
		v := act(bridge.KindVote, "a", "x", id, "P1")
		v.Sender, v.Vote = sender, &bridge.Vote{Choices: choices}
		h.Inject(v)
	}
	ann, bob, owner := bridge.Sender{ID: "u-ann", Name: "Ann"}, bridge.Sender{ID: "u-bob", Name: "Bob"}, bridge.Sender{ID: "me", Name: "Me", IsOwner: true}
	vote("V1", ann, 0)
	vote("V2", bob, 0, 2)
	vote("V3", ann, 1) // Ann changes her mind
	vote("V4", owner, 2)
	vote("V5", bob) // Bob withdraws

	want := []struct {
		choices []int
		tally   []int
		text    string
	}{
		{[]int{0}, []int{1, 0, 0}, "Ann voted for “Pizza” in “Lunch?” (Pizza 1 · Sushi 0 · Soup 0)"},
		{[]int{0, 2}, []int{2, 0, 1}, "Bob voted for “Pizza”, “Soup” in “Lunch?” (Pizza 2 · Sushi 0 · Soup 1)"},
		{[]int{1}, []int{1, 1, 1}, "Ann voted for “Sushi” in “Lunch?” (Pizza 1 · Sushi 1 · Soup 1)"},
		{[]int{2}, []int{1, 1, 2}, "Me voted for “Soup” in “Lunch?” (Pizza 1 · Sushi 1 · Soup 2)"},
		{nil, []int{0, 1, 1}, "Bob withdrew their vote in “Lunch?” (Pizza 0 · Sushi 1 · Soup 1)"},
	}
	got, words := polls.WaitSent(t, 1+len(want))[1:], plain.WaitSent(t, 1+len(want))[1:]
	for i, w := range want {
		g := got[i]
		if g.Kind != bridge.KindVote || g.Target != "polls-1" || g.Vote == nil || !reflect.DeepEqual(g.Vote.Tally, w.tally) ||
			len(g.Vote.Choices) != len(w.choices) || g.Vote.Question != "Lunch?" || len(g.Vote.Options) != 3 {
			t.Errorf("vote %d reached the poll destination as %s on %q %+v; want choices %v, tally %v on polls-1", i+1, g.Kind, g.Target, g.Vote, w.choices, w.tally)
		}
		if n := words[i]; n.Kind != bridge.KindMessage || !n.Notice || n.Text != w.text || n.ReplyTo != "plain-1" || n.Vote != nil {
			t.Errorf("vote %d reached the plain destination as %s %q answering %q; want the notice %q answering plain-1", i+1, n.Kind, n.Text, n.ReplyTo, w.text)
		}
	}

	// The owner voting under another id (from another device) is still
	// one voter.
	v := act(bridge.KindVote, "a", "x", "V7", "P1")
	v.Sender, v.Vote = bridge.Sender{ID: "@me:b", Name: "Me", IsOwner: true}, &bridge.Vote{Choices: []int{0}}
	h.Inject(v)
	if g := polls.WaitSent(t, 7)[6]; g.Vote == nil || !reflect.DeepEqual(g.Vote.Tally, []int{1, 1, 0}) {
		t.Errorf("the owner's vote from another id counted as %+v, want the owner's earlier vote replaced (tally [1 1 0])", g.Vote)
	}

	// A vote in a poll never seen asked, or one that is not a poll, goes nowhere.
	stray := act(bridge.KindVote, "a", "x", "V8", "nope")
	stray.Vote = &bridge.Vote{Choices: []int{0}}
	h.Inject(stray)
	marker := msg("a", "x", "M1", "after")
	h.Inject(marker)
	if g := polls.WaitSent(t, 8)[7]; g.Kind != bridge.KindMessage || g.Text != "after" {
		t.Errorf("after a vote in an unknown poll the destination got %s %q, want only the next message", g.Kind, g.Text)
	}

	for _, bad := range []*bridge.Vote{nil, {Choices: []int{-1}}, {Choices: []int{1, 1}}, {Choices: []int{12}}} {
		ev := act(bridge.KindVote, "a", "x", "V9", "P1")
		ev.Vote = bad
		if err := a.Inject(context.Background(), ev); err == nil {
			t.Errorf("vote %+v accepted", bad)
		}
	}
}

// A live location moves by edits of its message: a destination that
// shows places and edits gets each move as an edit with the new place,
// one that edits but shows no places an edit of its text with the new
// map link, and one that cannot edit keeps the first place alone rather
// than a line per move.
func TestLiveLocationMovesByEdits(t *testing.T) {
	a := bridgetest.NewFake("a", all)
	mapsCaps := all
	mapsCaps.Locations = true
	maps := bridgetest.NewFake("maps", mapsCaps)
	words := bridgetest.NewFake("words", bridge.Capabilities{Edits: true})
	lines := bridgetest.NewFake("lines", bridge.Capabilities{})
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "maps/y", "words/z", "lines/w")}, a, maps, words, lines)
	m := msg("a", "x", "L1", "")
	m.Location = &bridge.Location{Latitude: 1, Longitude: 2, Live: true}
	h.Inject(m)
	for i, lat := range []float64{1.5, 2.25} {
		move := act(bridge.KindEdit, "a", "x", fmt.Sprintf("L1.%d", i), "L1")
		move.Location = &bridge.Location{Latitude: lat, Longitude: 2, Live: true}
		h.Inject(move)
	}
	h.Inject(msg("a", "x", "M1", "after"))

	got := maps.WaitSent(t, 4)
	for i, lat := range []float64{1.5, 2.25} {
		if g := got[1+i]; g.Kind != bridge.KindEdit || g.Target != "maps-1" || g.Location == nil || g.Location.Latitude != lat || !g.Location.Live {
			t.Errorf("move %d reached the map destination as %s on %q at %+v", i+1, g.Kind, g.Target, g.Location)
		}
	}
	w := words.WaitSent(t, 4)
	if g := w[2]; g.Kind != bridge.KindEdit || g.Target != "words-1" || g.Location != nil || g.Text != "📍 Live location\nhttps://maps.google.com/?q=2.25,2" {
		t.Errorf("the last move reached the text destination as %s on %q: %q", g.Kind, g.Target, g.Text)
	}
	if l := lines.WaitSent(t, 2); l[0].Location != nil || !strings.Contains(l[0].Text, "q=1,2") || l[1].Text != "after" {
		t.Errorf("the destination without edits got %q then %q; want the first place, then the next message, no moves", l[0].Text, l[1].Text)
	}

	bad := act(bridge.KindEdit, "a", "x", "L1.9", "L1")
	bad.Location = &bridge.Location{Latitude: 91}
	if err := a.Inject(context.Background(), bad); err == nil {
		t.Error("a move off the Earth was accepted")
	}
}
