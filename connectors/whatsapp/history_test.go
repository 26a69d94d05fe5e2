package whatsapp

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waHistorySync"

	"github.com/phonebridge/phonebridge/config"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// historyOf is the texts of the history events the sink got in chat, in
// the order it got them.
func historyOf(s *recSink, chat string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, ev := range s.events {
		if ev.History && ev.Chat.ID == chat {
			out = append(out, ev.Text)
		}
	}
	return out
}

// texts is n history messages "prefix i", a minute apart, the last one
// ago before now.
func texts(prefix string, n int, ago time.Duration) []fakewa.HistoryMessage {
	var out []fakewa.HistoryMessage
	last := time.Now().Add(-ago).Truncate(time.Second)
	for i := range n {
		out = append(out, fakewa.HistoryMessage{Text: fmt.Sprintf("%s %d", prefix, i), Time: last.Add(-time.Duration(n-1-i) * time.Minute)})
	}
	return out
}

// numbered is "prefix from" … "prefix to-1".
func numbered(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s %d", prefix, i))
	}
	return out
}

// TestHistoryBackfilledOnLink: the history WhatsApp hands a new device is
// relayed as history, oldest first per chat, at each message's own time,
// by phone number, the newest per_chat of each chat; a group's messages
// name their senders; what is older than max_age is left out. A live
// message after it is not history.
func TestHistoryBackfilledOnLink(t *testing.T) {
	opts := rigOptions()
	opts.History.PerChat = 4
	opts.History.MaxAge = 24 * time.Hour
	var bobTimes []time.Time
	lw := newLinkedWorldWith(t, fakewa.Options{LIDAddressing: true}, opts, func(w *waWorld) {
		bobMsgs := texts("bob", 6, time.Hour)
		for _, m := range bobMsgs {
			bobTimes = append(bobTimes, m.Time)
		}
		family := []fakewa.HistoryMessage{
			{Sender: w.eve.LID, Text: "eve says", Time: time.Now().Add(-3 * time.Hour).Truncate(time.Second)},
			{FromMe: true, Text: "ann says", Time: time.Now().Add(-2 * time.Hour).Truncate(time.Second)},
		}
		old := texts("ancient", 2, 48*time.Hour)
		w.ann.HistoryOnLink = []*waHistorySync.HistorySync{w.ann.NewHistorySync(waHistorySync.HistorySync_INITIAL_BOOTSTRAP,
			w.ann.HistoryConversation(w.bob.LID, "", bobMsgs...),
			w.ann.HistoryConversation(w.family.JID, "", family...),
			w.ann.HistoryConversation(w.eve.PN, "", old...))}
	})
	bob, family := lw.bob.PN.String(), lw.family.JID.String()
	waitUntil(t, "Bob's and Family's history", func() bool {
		return len(historyOf(lw.s, bob)) == 4 && len(historyOf(lw.s, family)) == 2
	})
	if got := historyOf(lw.s, bob); !slices.Equal(got, numbered("bob", 2, 6)) {
		t.Errorf("Bob's history came as %q, want his newest 4 oldest first", got)
	}
	if got := historyOf(lw.s, family); !slices.Equal(got, []string{"eve says", "ann says"}) {
		t.Errorf("Family's history came as %q", got)
	}
	for _, ev := range lw.s.eventList() {
		if !ev.History {
			continue
		}
		switch ev.Text {
		case "bob 2":
			if !ev.Time.Equal(bobTimes[2]) || ev.Sender.ID != bob || ev.Sender.Name != "Bob" || ev.Chat.Name != "Bob" {
				t.Errorf("Bob's history message is %+v at %v, want from Bob by number at %v", ev.Sender, ev.Time, bobTimes[2])
			}
		case "eve says":
			if ev.Sender.ID != lw.eve.PN.String() || ev.Sender.Name != "Eve" {
				t.Errorf("Eve's history message in Family is from %+v, want Eve by number", ev.Sender)
			}
		case "ann says":
			if !ev.Sender.IsOwner {
				t.Errorf("the owner's history message is from %+v, want the owner", ev.Sender)
			}
		}
	}
	if got := historyOf(lw.s, lw.eve.PN.String()); len(got) != 0 {
		t.Errorf("history older than max_age was relayed: %q", got)
	}

	live := lw.says(t, lw.bob, lw.ann.PN, "live now")
	if live.History {
		t.Errorf("a live message was relayed as history: %+v", live)
	}
}

// TestHistoryChunkSentAgainIsRelayedOnce: WhatsApp may send a chunk
// again (and a restart may cut the backfill short); what was relayed is
// not relayed again, what is new in it is.
func TestHistoryChunkSentAgainIsRelayedOnce(t *testing.T) {
	lw := newLinkedWorld(t, fakewa.Options{}, nil)
	ctx := ctxFor(t)
	bob := lw.bob.PN.String()
	first := texts("first", 3, time.Hour)
	chunk := lw.ann.NewHistorySync(waHistorySync.HistorySync_RECENT, lw.ann.HistoryConversation(lw.bob.PN, "", first...))
	if err := lw.ann.SendHistorySync(ctx, chunk); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the first chunk", func() bool { return len(historyOf(lw.s, bob)) == 3 })

	// The same chunk again, then one with a new message among the old.
	if err := lw.ann.SendHistorySync(ctx, chunk); err != nil {
		t.Fatal(err)
	}
	more := append(slices.Clone(first), fakewa.HistoryMessage{Text: "first 3", Time: time.Now().Add(-time.Minute).Truncate(time.Second)})
	for i := range first {
		more[i].ID = chunk.GetConversations()[0].GetMessages()[len(first)-1-i].GetMessage().GetKey().GetID()
	}
	if err := lw.ann.SendHistorySync(ctx, lw.ann.NewHistorySync(waHistorySync.HistorySync_RECENT, lw.ann.HistoryConversation(lw.bob.PN, "", more...))); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the new message of the last chunk", func() bool { return slices.Contains(historyOf(lw.s, bob), "first 3") })
	if got := historyOf(lw.s, bob); !slices.Equal(got, numbered("first", 0, 4)) {
		t.Errorf("history came as %q, want each message once", got)
	}
}

// TestHistoryBackfillSettings: backfill none relays no history (names and
// LIDs from it are still learnt); recent leaves out the full history
// the phone sends later; all relays it.
func TestHistoryBackfillSettings(t *testing.T) {
	for _, tc := range []struct {
		backfill string
		recent   bool // the recent chunk is relayed
		full     bool // the full one is
	}{
		{BackfillNone, false, false},
		{BackfillRecent, true, false},
		{BackfillAll, true, true},
	} {
		t.Run(tc.backfill, func(t *testing.T) {
			opts := rigOptions()
			opts.History.Backfill = tc.backfill
			lw := newLinkedWorld(t, fakewa.Options{}, opts)
			ctx := ctxFor(t)
			bob := lw.bob.PN.String()
			for _, hs := range []*waHistorySync.HistorySync{
				lw.ann.NewHistorySync(waHistorySync.HistorySync_RECENT, lw.ann.HistoryConversation(lw.bob.PN, "", texts("recent", 1, time.Hour)...)),
				lw.ann.NewHistorySync(waHistorySync.HistorySync_FULL, lw.ann.HistoryConversation(lw.bob.PN, "", texts("full", 1, 2*time.Hour)...)),
			} {
				if err := lw.ann.SendHistorySync(ctx, hs); err != nil {
					t.Fatal(err)
				}
			}
			// A live message after both: whatsmeow handles messages in
			// order, so both chunks are stored by then; then the backfill
			// has relayed all it stored.
			lw.says(t, lw.bob, lw.ann.PN, "marker")
			waitUntil(t, "the backfill to catch up", func() bool { return lw.c.backfillPending(ctx) == 0 })
			got := historyOf(lw.s, bob)
			if slices.Contains(got, "recent 0") != tc.recent || slices.Contains(got, "full 0") != tc.full {
				t.Errorf("backfill %s relayed %q", tc.backfill, got)
			}
		})
	}
}

// TestHistoryOptionsChecked: the history section is decoded strictly and
// each bad value is named by its path.
func TestHistoryOptionsChecked(t *testing.T) {
	_, err := config.Parse([]byte(`
state_dir: ./state
connectors:
  me:
    type: whatsapp
    history:
      backfill: everything
      per_chat: 0
      max_age: -1h
      since: 2020
`), filepath.Join(t.TempDir(), "phonebridge.yaml"))
	if err == nil {
		t.Fatal("a bad history section was accepted")
	}
	for _, want := range []string{"connectors.me.history.backfill", "connectors.me.history.per_chat", "connectors.me.history.max_age", "connectors.me.history.since: unknown key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not name %s:\n%v", want, err)
		}
	}
	cfg, err := config.Parse([]byte("state_dir: ./state\nconnectors:\n  me:\n    type: whatsapp\n"), filepath.Join(t.TempDir(), "phonebridge.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if h := cfg.Connectors["me"].Options.(*Options).History; h != (HistoryOptions{Backfill: BackfillRecent, PerChat: 50}) {
		t.Errorf("the default history section is %+v, want recent, 50 per chat", h)
	}
}

// TestHistoryBeforeTheNextLiveMessage: a live message that comes while
// its chat's history is still being relayed waits for it, so the chat
// reads in order.
func TestHistoryBeforeTheNextLiveMessage(t *testing.T) {
	lw := newLinkedWorld(t, fakewa.Options{}, nil)
	ctx := ctxFor(t)
	bob := lw.bob.PN.String()
	chunk := lw.ann.NewHistorySync(waHistorySync.HistorySync_RECENT, lw.ann.HistoryConversation(lw.bob.PN, "", texts("old", 50, time.Hour)...))
	if err := lw.ann.SendHistorySync(ctx, chunk); err != nil {
		t.Fatal(err)
	}
	lw.says(t, lw.bob, lw.ann.PN, "new")
	var order []string
	for _, ev := range lw.s.eventList() {
		if ev.Chat.ID == bob {
			order = append(order, ev.Text)
		}
	}
	if want := append(numbered("old", 0, 50), "new"); !slices.Equal(order, want) {
		t.Errorf("Bob's chat reached the core as %q, want its history, then the new message", order)
	}
}

// TestBackfillOnDemand: the owner asks for older messages of a chat by
// its name; the phone is asked for those before the oldest the link
// has, and they come as history, oldest first, not cut by per_chat.
func TestBackfillOnDemand(t *testing.T) {
	opts := rigOptions()
	opts.History.PerChat = 10
	var archive []fakewa.HistoryMessage
	lw := newLinkedWorldWith(t, fakewa.Options{}, opts, func(w *waWorld) {
		if err := w.ann.SetContact(context.Background(), w.bob.PN, "Bob", "Bob"); err != nil {
			t.Fatal(err)
		}
		w.ann.SetArchive(w.bob.PN, texts("bob", 30, time.Hour)...)
		archive = w.ann.Archive(w.bob.PN)
		w.ann.HistoryOnLink = []*waHistorySync.HistorySync{w.ann.NewHistorySync(waHistorySync.HistorySync_INITIAL_BOOTSTRAP,
			w.ann.HistoryConversation(w.bob.PN, "", archive[20:]...))}
	})
	bob := lw.bob.PN.String()
	waitUntil(t, "the history of the link", func() bool { return len(historyOf(lw.s, bob)) == 10 })
	waitUntil(t, "Bob's name from the address book", func() bool { _, err := lw.c.ResolveChat(ctxFor(t), "Bob"); return err == nil })
	if err := lw.c.Backfill(ctxFor(t), "Bob", 5); err != nil {
		t.Fatalf("Backfill: %v", err)
	}
	waitUntil(t, "the older messages", func() bool { return len(historyOf(lw.s, bob)) == 15 })
	if got := historyOf(lw.s, bob)[10:]; !slices.Equal(got, numbered("bob", 15, 20)) {
		t.Errorf("the backfill brought %q, want the 5 before the oldest, oldest first", got)
	}
	reqs := lw.ann.OnDemandRequests()
	if len(reqs) != 1 || reqs[0].OldestID != archive[20].ID || reqs[0].Count != 5 || reqs[0].Refused {
		t.Errorf("the phone was asked %+v, want once for 5 before %s", reqs, archive[20].ID)
	}

	// What cannot be asked says why.
	for _, tc := range []struct {
		chat  string
		count int
		want  string
	}{
		{"Bob", 0, "count must be 1 to 500"},
		{"Nobody", 5, "Nobody"},
		{lw.eve.PN.String(), 5, "no message of " + lw.eve.PN.String() + " has reached link"},
	} {
		if err := lw.c.Backfill(ctxFor(t), tc.chat, tc.count); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Backfill(%s, %d): %v, want an error saying %q", tc.chat, tc.count, err, tc.want)
		}
	}
}
