package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/bridgetest"
	"github.com/phonebridge/phonebridge/config"
)

// TestChatsMoveToTheirNewIDs: wa's chat "lid" (mirrored on mx as a room
// of the same id) is found at start to be "pn". Everything recorded under
// "lid" follows: an event waiting for mx goes to "pn" with its chat and
// sender rewritten, a reply from either side finds a message relayed
// before the move, the mirror moves its own rows, the operator is told
// what it reported, and a chat that did not move stays as it was.
func TestChatsMoveToTheirNewIDs(t *testing.T) {
	wa, mx, ops := bridgetest.NewFake("wa", bridgetest.AllCaps), bridgetest.NewFake("mx", bridgetest.AllCaps), bridgetest.NewFake("ops", bridgetest.AllCaps)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("all", "wa/*", "mx/*")}, wa, mx, ops)
	h.Config.Notices = config.Notices{Connector: "ops", Chat: "notices"}

	at := time.Unix(1_700_000_000, 0)
	h.Inject(bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: "wa", ID: "lid"}, ID: "w1", Sender: bridge.Sender{ID: "lid", Name: "Bob"}, Time: at, Text: "first"})
	h.Inject(bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: "wa", ID: "grp"}, ID: "w2", Sender: bridge.Sender{ID: "lid", Name: "Bob"}, Time: at, Text: "in the group"})
	sent := mx.WaitSent(t, 2)
	firstOnMx := "mx-1"
	if sent[0].Text != "first" {
		t.Fatalf("mx got %q first", sent[0].Text)
	}

	// mx is down: the next message waits in the outbox under "lid".
	mx.FailWith(func(*bridge.Outgoing) error { return errors.New("homeserver down") })
	h.Inject(bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: "wa", ID: "lid"}, ID: "w3", Sender: bridge.Sender{ID: "lid", Name: "Bob"}, Time: at, Text: "waited"})
	if err := h.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	mx.FailWith(nil)
	wa.SetChatMoves([]bridge.ChatMove{{From: "lid", To: "pn"}})
	h.Start()

	if seen := wa.Seen(); !slices.Contains(seen, "lid") || !slices.Contains(seen, "grp") {
		t.Errorf("ChatMoves was told %q, want the chats and senders recorded", seen)
	}
	if got := mx.Moved("wa"); !slices.Equal(got, []bridge.ChatMove{{From: "lid", To: "pn"}}) {
		t.Errorf("the mirror moved %v for wa", got)
	}
	if got := wa.Moved("wa"); len(got) != 1 {
		t.Errorf("wa moved its own rows %v, want the one move", got)
	}
	waited := mx.WaitSent(t, 3)[2]
	if waited.Text != "waited" || waited.Chat.ID != "pn" || waited.Origin.ID != "pn" || waited.Sender.ID != "pn" {
		t.Errorf("the waiting event went to chat %q from origin %q sender %q, want all \"pn\"", waited.Chat.ID, waited.Origin.ID, waited.Sender.ID)
	}
	notice := ops.WaitSent(t, 1)
	if got := notice[len(notice)-1].Text; got != "mx moved 1 chats of wa" && got != "wa moved 1 chats of wa" {
		t.Errorf("the notice says %q", got)
	}

	// A reply from WhatsApp, now under "pn", to the message relayed under
	// "lid"; and one from the mirror's room, now "pn", to its copy.
	h.Inject(bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: "wa", ID: "pn"}, ID: "w4", Sender: bridge.Sender{ID: "pn", Name: "Bob"}, Time: at, Text: "answer", ReplyTo: "w1"})
	if got := mx.WaitSent(t, 4)[3]; got.ReplyTo != firstOnMx {
		t.Errorf("wa's answer reached mx replying to %q, want %q", got.ReplyTo, firstOnMx)
	}
	h.Inject(bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: "mx", ID: "pn"}, ID: "m9", Sender: bridge.Sender{ID: "@ann", Name: "Ann"}, Time: at, Text: "from the room", ReplyTo: firstOnMx})
	if got := wa.WaitSent(t, 1)[0]; got.Chat.ID != "pn" || got.ReplyTo != "w1" {
		t.Errorf("the room's answer reached wa in %q replying to %q, want \"pn\" and w1", got.Chat.ID, got.ReplyTo)
	}
	// The group kept its id; its message's sender moved.
	h.Inject(bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: "wa", ID: "grp"}, ID: "w5", Sender: bridge.Sender{ID: "pn", Name: "Bob"}, Time: at, Text: "group answer", ReplyTo: "w2"})
	if got := mx.WaitSent(t, 5)[4]; got.Chat.ID != "grp" || got.ReplyTo != "mx-2" {
		t.Errorf("the group answer reached mx in %q replying to %q, want grp and mx-2", got.Chat.ID, got.ReplyTo)
	}
}

// TestChatsMoveWhileRunning: wa learns, while the bridge runs, that its
// chat "pn" is "lid" (one person seen two ways) and moves it now. Both
// chats' deliveries to the mirror mx are in flight and more wait behind
// them in the queues' memory; messages keep coming in "lid" all through
// the move, and the mirror's old room writes during it. Every delivery
// goes exactly once; what waited under "pn" goes to "lid", each chat's
// messages in order; a reply queued before the move, across the two
// forms, finds its target; the movers are told and the operator gets
// their report.
func TestChatsMoveWhileRunning(t *testing.T) {
	wa, mx, ops := bridgetest.NewFake("wa", bridgetest.AllCaps), bridgetest.NewFake("mx", bridgetest.AllCaps), bridgetest.NewFake("ops", bridgetest.AllCaps)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("all", "wa/*", "mx/*")}, wa, mx, ops)
	h.Config.Notices = config.Notices{Connector: "ops", Chat: "notices"}
	h.Restart() // for the notices chat

	at := time.Unix(1_700_000_000, 0)
	msg := func(chat, id string, extra ...func(*bridge.Event)) bridge.Event {
		ev := bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: "wa", ID: chat}, ID: id, Sender: bridge.Sender{ID: chat, Name: "Bob"}, Time: at, Text: id}
		for _, f := range extra {
			f(&ev)
		}
		return ev
	}
	h.Inject(msg("pn", "p1"))
	h.Inject(msg("lid", "l1"))
	mx.WaitSent(t, 2)
	p1OnMx := ""
	for i, out := range mx.Sent() {
		if out.Text == "p1" {
			p1OnMx = fmt.Sprintf("mx-%d", i+1) // the fake's ids count its sends
		}
	}

	// Both chats' next deliveries hang in Send; more wait behind them.
	release := mx.Block()
	h.Inject(msg("pn", "p2"))
	h.Inject(msg("lid", "l2"))
	mx.WaitBlocked(t)
	mx.WaitBlocked(t)
	for _, id := range []string{"p3", "p4", "p5"} {
		h.Inject(msg("pn", id))
	}
	h.Inject(msg("lid", "l3"))
	h.Inject(msg("lid", "l4", func(ev *bridge.Event) { ev.ReplyTo = "p1" })) // across the forms

	held := make(chan struct{})
	var heldOnce sync.Once
	defer bridge.SetHeldHook(func() { heldOnce.Do(func() { close(held) }) })()
	moved := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		moved <- wa.MoveChatsNow(ctx, []bridge.ChatMove{{From: "pn", To: "lid"}})
	}()

	// "lid" goes on all through the move.
	stopFlow := make(chan struct{})
	flowed := make(chan int, 1)
	go func() {
		n := 0
		defer func() { flowed <- n }()
		for i := 5; ; i++ {
			select {
			case <-stopFlow:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := wa.Inject(ctx, msg("lid", fmt.Sprintf("l%d", i)))
			cancel()
			if err != nil {
				t.Errorf("inject l%d: %v", i, err)
				return
			}
			n++
		}
	}()
	select {
	case <-held:
	case err := <-moved:
		t.Fatalf("the move ended (%v) without holding the moved chats' deliveries", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the move did not hold the moved chats' deliveries within 10s")
	}
	// The room of "pn" on mx writes while the move waits for the sends.
	h.Inject(bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: "mx", ID: "pn"}, ID: "m1", Sender: bridge.Sender{ID: "@ann", Name: "Ann"}, Time: at, Text: "from the old room"})
	release()
	if err := <-moved; err != nil {
		t.Fatalf("move: %v", err)
	}
	close(stopFlow)
	n := <-flowed
	h.Inject(msg("lid", "last"))

	// Every event once: p1..p5, l1..l4, the flow, and the last.
	want := 5 + 4 + n + 1
	sent := mx.WaitSent(t, want)
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("waited 10s for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("the last message", func() bool {
		for _, out := range mx.Sent() {
			if out.Text == "last" {
				return true
			}
		}
		return false
	})
	sent = mx.Sent()
	count := map[string]int{}
	byChat := map[string][]string{}
	for _, out := range sent {
		count[out.Text]++
		byChat[out.Chat.ID] = append(byChat[out.Chat.ID], out.Text)
		if out.Text == "l4" && out.ReplyTo != p1OnMx {
			t.Errorf("the reply across forms reached mx replying to %q, want p1's copy %q", out.ReplyTo, p1OnMx)
		}
	}
	if len(sent) != want {
		t.Errorf("mx was sent %d events, want %d: %v", len(sent), want, byChat)
	}
	for text, c := range count {
		if c != 1 {
			t.Errorf("mx got %q %d times", text, c)
		}
	}
	// p1 and p2 (in flight when the move began) went to "pn"; every
	// other p to "lid", in order, as did every l.
	if got := byChat["pn"]; !slices.Equal(got, []string{"p1", "p2"}) {
		t.Errorf("mx's \"pn\" got %v, want p1 and p2 only", got)
	}
	var ps, ls []string
	for _, text := range byChat["lid"] {
		switch {
		case text[0] == 'p':
			ps = append(ps, text)
		case text[0] == 'l' && text != "last":
			ls = append(ls, text)
		}
	}
	if !slices.Equal(ps, []string{"p3", "p4", "p5"}) {
		t.Errorf("what waited under \"pn\" reached \"lid\" as %v, want p3 p4 p5 in order", ps)
	}
	for i, text := range ls {
		if want := fmt.Sprintf("l%d", i+1); text != want {
			t.Fatalf("\"lid\" got its messages as %v, want l1, l2, ... in order", ls)
		}
	}
	if got := byChat["lid"][len(byChat["lid"])-1]; got != "last" {
		t.Errorf("\"lid\" ended with %q, want the message sent after the move", got)
	}

	// What the old room wrote during the move reached wa's moved chat.
	if got := wa.WaitSent(t, 1)[0]; got.Chat.ID != "lid" || got.Text != "from the old room" {
		t.Errorf("the old room's message reached wa in %q as %q, want \"lid\"", got.Chat.ID, got.Text)
	}
	if got := mx.Moved("wa"); !slices.Equal(got, []bridge.ChatMove{{From: "pn", To: "lid"}}) {
		t.Errorf("the mirror moved %v", got)
	}
	for _, f := range []*bridgetest.Fake{wa, mx} {
		if got := f.MovedLive(); !slices.Equal(got, []string{"wa: pn>lid"}) {
			t.Errorf("%s was told of moves %v, want once of pn>lid", f.Name(), got)
		}
	}
	waitFor("the notice of the move", func() bool {
		for _, out := range ops.Sent() {
			if out.Text == "mx moved 1 chats of wa" {
				return true
			}
		}
		return false
	})
}

// TestChatsMoveGivenUpLeavesDeliveryAsItWas: a live move that cannot
// hold the chats in time (a send to one hangs past its context) moves
// nothing, and the held queues go on: everything reaches the old chat
// once, in order.
func TestChatsMoveGivenUpLeavesDeliveryAsItWas(t *testing.T) {
	wa, mx := bridgetest.NewFake("wa", bridgetest.AllCaps), bridgetest.NewFake("mx", bridgetest.AllCaps)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("all", "wa/*", "mx/*")}, wa, mx)
	at := time.Unix(1_700_000_000, 0)
	msg := func(id string) bridge.Event {
		return bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: "wa", ID: "pn"}, ID: id, Sender: bridge.Sender{ID: "pn", Name: "Bob"}, Time: at, Text: id}
	}
	release := mx.Block()
	h.Inject(msg("p1"))
	mx.WaitBlocked(t)
	h.Inject(msg("p2"))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err := wa.MoveChatsNow(ctx, []bridge.ChatMove{{From: "pn", To: "lid"}})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a move that could not hold its chats in time returned %v", err)
	}
	release()
	h.Inject(msg("p3"))
	var got []string
	for _, out := range mx.WaitSent(t, 3) {
		got = append(got, out.Chat.ID+":"+out.Text)
	}
	if want := []string{"pn:p1", "pn:p2", "pn:p3"}; !slices.Equal(got, want) {
		t.Errorf("mx got %v, want %v", got, want)
	}
	if moved := mx.Moved("wa"); moved != nil {
		t.Errorf("the mirror moved %v", moved)
	}
}
