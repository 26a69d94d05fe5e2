package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waHistorySync"
	"go.mau.fi/whatsmeow/types"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/internal/daemontest"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// historyChat is one chat of the history test: its portal's name, its
// id as the bridge names it, its history as Ann's phone hands it over.
type historyChat struct {
	name  string
	jid   types.JID
	from  *fakewa.Phone // who writes in it now
	to    types.JID     // where they write
	msgs  []fakewa.HistoryMessage
	texts []string
}

// TestWhatsAppHistoryBackfilled: Ann's phone hands the newly linked
// daemon 20 chats of history, 10 messages each, some one-to-one chats by
// LID. The daemon is SIGKILLed while relaying it and started again, and
// the phone sends the same history again. Each chat's portal holds its
// history once, in order, each message dated when it was sent, as a
// notice, then the chat's first live message; the API gets each history
// message once, flagged; IRC gets none of it, only the live message.
func TestWhatsAppHistoryBackfilled(t *testing.T) {
	const chatsN, perChat = 20, 10
	w := newE2EWorld(t)
	ctx := t.Context()
	base := time.Now().Add(-48 * time.Hour).Truncate(time.Second)
	var chats []*historyChat
	addPerson := func(p *fakewa.Phone) {
		chats = append(chats, &historyChat{name: p.PushName, jid: p.PN, from: p, to: w.ann.PN})
	}
	addPerson(w.bob)
	addPerson(w.eve)
	for k := 2; k < chatsN-1; k++ {
		p := w.srv.NewPhone(fmt.Sprintf("1555000%04d", 8000+k), fmt.Sprintf("1000000000%05d", 80000+k), fmt.Sprintf("Hal%d", k))
		if err := w.ann.SetContact(ctx, p.PN, p.PushName, p.PushName); err != nil {
			t.Fatal(err)
		}
		addPerson(p)
	}
	chats = append(chats, &historyChat{name: "Family", jid: w.family.JID, from: w.eve, to: w.family.JID})
	var convs []*waHistorySync.Conversation
	for k, c := range chats {
		for i := range perChat {
			text := fmt.Sprintf("h%d-%02d", k, i)
			m := fakewa.HistoryMessage{Text: text, Time: base.Add(time.Duration(k*perChat+i) * time.Minute)}
			if c.jid.Server == types.GroupServer {
				m.Sender = []types.JID{w.bob.PN, w.eve.PN}[i%2]
			}
			c.msgs, c.texts = append(c.msgs, m), append(c.texts, text)
		}
		conv := c.jid // half the people's chats come by LID
		if c.jid.Server == types.DefaultUserServer && k%2 == 0 {
			conv = c.from.LID
		}
		convs = append(convs, w.ann.HistoryConversation(conv, "", c.msgs...))
	}
	history := w.ann.NewHistorySync(waHistorySync.HistorySync_INITIAL_BOOTSTRAP, convs...)

	api := make([]string, 0, len(chats))
	for _, c := range chats {
		api = append(api, c.jid.String())
	}
	w.d = daemontest.StartEnv(t, w.env, w.bin, "run", "-c", w.cfg)
	w.link(t)
	w.waitFor(t, "the link to be connected", func() bool { return strings.Contains(w.links(t), "connected") })
	if err := w.ann.SendHistorySync(ctx, history); err != nil {
		t.Fatal(err)
	}
	// SIGKILL while the history is on its way: stored and partly relayed
	// to the core, or relayed and partly delivered.
	var mid string
	w.waitFor(t, "the backfill to begin", func() bool {
		st := w.status(t)
		for _, l := range st.Links {
			if l.History != nil && l.History.Relayed > 0 {
				mid = fmt.Sprintf("%d of %d history messages relayed to the core, %d deliveries waiting", l.History.Relayed, l.History.Relayed+l.History.Waiting, len(st.Outbox))
				return true
			}
		}
		return false
	})
	w.d.Kill()
	t.Logf("SIGKILL with %s", mid)
	killed := w.d.Logs()
	w.d = daemontest.StartEnv(t, w.env, w.bin, "run", "-c", w.cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the killed daemon's warnings:\n%s\nportals:\n%s", warnings(killed), linesWith(killed, "portal"))
			t.Logf("the last daemon's log:\n%s", w.d.Logs())
		}
	})
	w.waitFor(t, "the link to be connected again", func() bool { return strings.Contains(w.links(t), "connected") })
	if err := w.ann.SendHistorySync(ctx, history); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, "the history to be relayed", func() bool {
		for _, l := range w.status(t).Links {
			if l.History != nil && l.History.Waiting == 0 && l.History.Relayed == chatsN*perChat {
				return true
			}
		}
		return false
	})
	// Then each chat's first live message.
	for k, c := range chats {
		if _, err := c.from.SendText(ctx, c.to, fmt.Sprintf("live%d", k)); err != nil {
			t.Fatal(err)
		}
	}
	apiClient := dialWAAPI(t, w.apiAddr, api...)

	for k, c := range chats {
		room := w.owner.AcceptInvite(t, c.name, e2eWait)
		var evts []*event.Event
		live := fmt.Sprintf("live%d", k)
		w.waitFor(t, c.name+"'s live message in its portal", func() bool {
			all, err := w.portalEvents(t, room)
			evts = messagesIn(all, w.owner.ID)
			return err == nil && len(evts) > 0 && bodyOf(evts[len(evts)-1]) == live
		})
		var bodies []string
		for _, e := range evts {
			bodies = append(bodies, bodyOf(e))
		}
		if want := append(slices.Clone(c.texts), live); !slices.Equal(bodies, want) {
			t.Errorf("portal %s holds %q, want its history once in order, then %s", c.name, bodies, live)
			continue
		}
		for i, e := range evts[:perChat] {
			if at, typ := time.UnixMilli(e.Timestamp), e.Content.Raw["msgtype"]; !at.Equal(c.msgs[i].Time) || typ != string(event.MsgNotice) {
				t.Errorf("portal %s: %s is dated %v as %v, want %v as a notice", c.name, bodyOf(e), at, typ, c.msgs[i].Time)
			}
		}
		apiClient.await(t, live, c.jid.String(), func(ev *daemontest.WireEvent) bool { return ev.Text == live })
		for i, text := range c.texts {
			n := apiClient.count(c.jid.String(), func(ev *daemontest.WireEvent) bool { return ev.Text == text && ev.History })
			if n != 1 {
				t.Errorf("the API got %s %d times flagged history, want once", text, n)
			}
			if i == 0 {
				if ev := apiClient.await(t, text, c.jid.String(), func(ev *daemontest.WireEvent) bool { return ev.Text == text }); ev.Time != c.msgs[0].Time.UTC().Format(time.RFC3339) {
					t.Errorf("the API got %s dated %s, want %s", text, ev.Time, c.msgs[0].Time.UTC().Format(time.RFC3339))
				}
			}
		}
	}
	// IRC: #bob and #family got their live messages, none of the history.
	w.carol.awaitLine(t, 0, e2eWait, ircLine("#bob", "live0"), w.d)
	w.carol.awaitLine(t, 0, e2eWait, ircLine("#family", fmt.Sprintf("live%d", chatsN-1)), w.d)
	w.carol.mu.Lock()
	for _, l := range w.carol.lines {
		if strings.Contains(l, " :<B\u200dob> h0-") || strings.Contains(l, fmt.Sprintf("h%d-", chatsN-1)) {
			t.Errorf("IRC got history: %q", l)
		}
	}
	w.carol.mu.Unlock()
	w.srv.Quiesce(2 * time.Second)
	w.d.Stop(5 * time.Second)
}

// messagesIn is the m.room.message events in evts that others sent.
func messagesIn(evts []*event.Event, owner id.UserID) []*event.Event {
	var out []*event.Event
	for _, e := range evts {
		if e.Type == event.EventMessage && e.Sender != owner {
			out = append(out, e)
		}
	}
	return out
}

func bodyOf(e *event.Event) string {
	body, _ := e.Content.Raw["body"].(string)
	return body
}
