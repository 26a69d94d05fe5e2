package main

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"google.golang.org/protobuf/proto"
	"maunium.net/go/mautrix/event"

	"github.com/phonebridge/phonebridge/internal/daemontest"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// TestWhatsAppOnePersonOneChat: WhatsApp addresses Bob by LID, then by
// phone number, then by LID again, in his chat and in a LID group. He is
// one chat, one portal and one ghost throughout: every message reaches
// his portal in order from the same ghost, the IRC channel whose route
// names him by number gets them all, the API gets them under his
// number, and replies across the forms find their targets both ways.
func TestWhatsAppOnePersonOneChat(t *testing.T) {
	w := newE2EWorld(t)
	club := w.srv.NewGroup("120363000000000003", "Club", w.ann, w.bob, w.eve) // a LID group
	w.start(t)
	w.link(t)
	w.waitFor(t, "the link to be connected", func() bool { return strings.Contains(w.links(t), "connected") })
	clubRoom := w.owner.AcceptInvite(t, "Club", e2eWait)
	bobChat, bobGhost := w.bob.PN.String(), ghost(w.bob.PN)

	forms := []bool{true, false, true} // by LID, by number, by LID
	ids := make([]string, len(forms))
	for i, byLID := range forms {
		w.bob.AddressBy(byLID)
		ids[i] = phoneSend(t, w.bob, w.ann.PN, text(fmt.Sprintf("form %d", i)))
	}
	bobRoom := w.owner.AcceptInvite(t, "Bob", e2eWait)
	var events []*event.Event
	for i := range forms {
		events = append(events, w.owner.Await(t, fmt.Sprintf("form %d in Bob's portal", i), e2eWait, matrixMsg(bobRoom, bobGhost, fmt.Sprintf("form %d", i))))
	}
	for i := 1; i < len(events); i++ {
		if events[i].Timestamp < events[i-1].Timestamp {
			t.Errorf("form %d reached the portal before form %d", i, i-1)
		}
	}
	phoneSend(t, w.bob, club.JID, text("in the club"))
	if evt := w.owner.Await(t, "Bob in the club", e2eWait, matrixMsg(clubRoom, bobGhost, "in the club")); evt.Sender != bobGhost {
		t.Errorf("Bob's club message came from %s, want his one ghost %s", evt.Sender, bobGhost)
	}
	if n := w.owner.Invited("Bob"); n != 1 {
		t.Errorf("the owner was invited to %d rooms called Bob, want his one portal", n)
	}
	for i := range forms {
		w.carol.awaitLine(t, 0, e2eWait, ircLine("#bob", fmt.Sprintf("form %d", i)), w.d)
		w.api.await(t, fmt.Sprintf("form %d", i), bobChat, func(ev *daemontest.WireEvent) bool { return ev.Text == fmt.Sprintf("form %d", i) })
	}

	// The owner answers the message that came by number; Bob, by LID,
	// answers the owner.
	reply := &event.MessageEventContent{MsgType: event.MsgText, Body: "answering form 1", RelatesTo: (&event.RelatesTo{}).SetReplyTo(events[1].ID)}
	replyEvent := w.ownerSays(t, bobRoom, reply)
	got := w.phoneGets(t, w.bob, "the owner's answer", func(m fakewa.Message) bool { return w.fromBridge(m, w.ann.PN) && m.Text() == "answering form 1" })
	if ci := got.Msg.GetExtendedTextMessage().GetContextInfo(); ci.GetStanzaID() != ids[1] {
		t.Errorf("Bob's phone got the owner's answer quoting %q, want his %s", ci.GetStanzaID(), ids[1])
	}
	w.bob.AddressBy(true)
	phoneSend(t, w.bob, w.ann.PN, &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{
		Text:        proto.String("answering the owner"),
		ContextInfo: &waE2E.ContextInfo{StanzaID: proto.String(got.ID), Participant: proto.String(w.ann.PN.String()), QuotedMessage: text("answering form 1")},
	}})
	back := w.owner.Await(t, "Bob's answer", e2eWait, matrixMsg(bobRoom, bobGhost, "answering the owner"))
	if rel := back.Content.AsMessage().RelatesTo; rel == nil || rel.GetReplyTo() != replyEvent {
		t.Errorf("Bob's answer by LID relates in Matrix to %+v, want a reply to the owner's %s", rel, replyEvent)
	}
	w.srv.Quiesce(2 * time.Second)
	w.d.Stop(5 * time.Second)
}

// TestWhatsAppOldDatabaseMigrates starts from a database as a release
// that kept WhatsApp ids as they came would have left it. It is made from
// a real run's database by writing two people's numbers as LIDs in every
// table phonebridge keeps (whatsmeow's own tables keep the truth): Dan's
// chat becomes Bob's LID, so Bob has two chats and two portals, and Eve's
// chat becomes her LID alone. One message to Bob's second chat waits in
// the outbox, the homeserver being down. At start, the bridge settles
// them: Bob's LID chat moves into his number's, its waiting message goes
// to his kept portal, the operator is told both rooms and the old room
// where the chat went on, and what is written there still reaches Bob;
// Eve keeps her LID chat and portal, her messages by number and by LID go
// there, and a reply to her old message finds it.
func TestWhatsAppOldDatabaseMigrates(t *testing.T) {
	w := newE2EWorld(t)
	// Both daemons' debug logs are shown if it fails.
	w.env = append(w.env, "PHONEBRIDGE_LOG_LEVEL=debug")
	dan := w.srv.NewPhone("15550004444", "100000000000004", "Dan")
	w.start(t)
	w.link(t)
	w.waitFor(t, "the link to be connected", func() bool { return strings.Contains(w.links(t), "connected") })

	phoneSend(t, w.bob, w.ann.PN, text("bob 1"))
	phoneSend(t, dan, w.ann.PN, text("dan 1"))
	eve1 := phoneSend(t, w.eve, w.ann.PN, text("eve 1"))
	bobRoom := w.owner.AcceptInvite(t, "Bob", e2eWait)
	danRoom := w.owner.AcceptInvite(t, "Dan", e2eWait)
	eveRoom := w.owner.AcceptInvite(t, "Eve", e2eWait)
	w.owner.Await(t, "bob 1", e2eWait, matrixMsg(bobRoom, ghost(w.bob.PN), "bob 1"))
	w.owner.Await(t, "dan 1", e2eWait, matrixMsg(danRoom, ghost(dan.PN), "dan 1"))
	eve1Event := w.owner.Await(t, "eve 1", e2eWait, matrixMsg(eveRoom, ghost(w.eve.PN), "eve 1"))

	// Every delivery so far recorded: a send the homeserver's stop cut off
	// unanswered would be sent again after the restart, and Dendrite's
	// /messages, where the bridge looks for it first, can leave out a
	// room's first message (seen here: a second copy of eve 1).
	w.waitFor(t, "the outbox to be empty", func() bool { return len(w.status(t).Outbox) == 0 })
	// The homeserver goes down; Dan's next message waits in the outbox.
	w.hs.Stop()
	phoneSend(t, dan, w.ann.PN, text("dan 2"))
	w.waitFor(t, "dan 2 to wait in the outbox", func() bool {
		for _, q := range w.status(t).Outbox {
			if q.Connector == "mx" && q.Chat == dan.PN.String() {
				return true
			}
		}
		return false
	})
	w.srv.Quiesce(2 * time.Second)
	waiting := w.status(t).Outbox
	w.d.Stop(10 * time.Second)
	first := w.d.Logs()
	w.hs.Restart(t)

	rewriteIDs(t, filepath.Join(w.dir, "state", "phonebridge.db"), map[string]string{
		dan.PN.String():   w.bob.LID.String(),
		w.eve.PN.String(): w.eve.LID.String(),
	})

	w.d = daemontest.StartEnv(t, w.env, w.bin, "run", "-c", w.cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("waiting when the first daemon stopped: %+v\nthe first daemon's log:\n%s\nthe second's:\n%s", waiting, first, w.d.Logs())
		}
	})
	w.waitFor(t, "the link to be connected again", func() bool { return strings.Contains(w.links(t), "connected") })
	w.api = dialWAAPI(t, w.apiAddr, "notices")
	notice := w.api.await(t, "the notice of Bob's two rooms", "notices", func(ev *daemontest.WireEvent) bool {
		return strings.Contains(ev.Text, string(bobRoom)) && strings.Contains(ev.Text, string(danRoom))
	})
	t.Logf("notice: %s", notice.Text)
	w.owner.Await(t, "the old room told where the chat went on", e2eWait, func(evt *event.Event) bool {
		return evt.RoomID == danRoom && evt.Sender == bot && strings.Contains(evt.Content.AsMessage().Body, string(bobRoom))
	})

	// Bob, by LID and by number: his kept portal, after what waited.
	w.bob.AddressBy(true)
	phoneSend(t, w.bob, w.ann.PN, text("bob 2"))
	w.bob.AddressBy(false)
	phoneSend(t, w.bob, w.ann.PN, text("bob 3"))
	w.owner.Await(t, "bob 3", e2eWait, matrixMsg(bobRoom, ghost(w.bob.PN), "bob 3"))
	evts, err := w.portalEvents(t, bobRoom)
	if err != nil {
		t.Fatal(err)
	}
	var bodies []string
	for _, e := range messagesIn(evts, w.owner.ID) {
		bodies = append(bodies, bodyOf(e))
	}
	if want := []string{"bob 1", "dan 2", "bob 2", "bob 3"}; !slices.Equal(bodies, want) {
		t.Errorf("Bob's kept portal holds %q, want %q: what waited for his LID chat, then his messages by either form", bodies, want)
	}
	// The old room still reaches him.
	w.ownerSays(t, danRoom, &event.MessageEventContent{MsgType: event.MsgText, Body: "from the old room"})
	w.phoneGets(t, w.bob, "what the owner wrote in the old room", func(m fakewa.Message) bool {
		return w.fromBridge(m, w.ann.PN) && m.Text() == "from the old room"
	})

	// Eve, by number, then by LID answering her old message: her portal.
	w.eve.AddressBy(false)
	phoneSend(t, w.eve, w.ann.PN, text("eve 2"))
	w.eve.AddressBy(true)
	phoneSend(t, w.eve, w.ann.PN, &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{
		Text:        proto.String("eve 3"),
		ContextInfo: &waE2E.ContextInfo{StanzaID: proto.String(eve1), Participant: proto.String(w.eve.LID.String()), QuotedMessage: text("eve 1")},
	}})
	eveGhost := ghost(w.eve.LID)
	w.owner.Await(t, "eve 2 in her portal", e2eWait, matrixMsg(eveRoom, eveGhost, "eve 2"))
	eve3 := w.owner.Await(t, "eve 3 in her portal", e2eWait, matrixMsg(eveRoom, eveGhost, "eve 3"))
	if rel := eve3.Content.AsMessage().RelatesTo; rel == nil || rel.GetReplyTo() != eve1Event.ID {
		t.Errorf("Eve's answer relates in Matrix to %+v, want a reply to her old %s", rel, eve1Event.ID)
	}
	for _, name := range []string{"Bob", "Eve", "Dan"} {
		if n := w.owner.Invited(name); n != 1 {
			t.Errorf("the owner was invited to %d rooms called %s, want 1", n, name)
		}
	}

	// The API log of Bob's chat holds his LID chat's messages too.
	api := dialWAAPI(t, w.apiAddr, w.bob.PN.String())
	for _, body := range []string{"bob 1", "dan 1", "dan 2", "bob 2", "bob 3"} {
		api.await(t, body, w.bob.PN.String(), func(ev *daemontest.WireEvent) bool { return ev.Text == body })
	}
	if n := api.count(w.bob.LID.String(), func(*daemontest.WireEvent) bool { return true }); n != 0 {
		t.Errorf("the API still has %d events under Bob's LID", n)
	}
	w.srv.Quiesce(2 * time.Second)
	w.d.Stop(5 * time.Second)
}

// rewriteIDs writes each old id as its new one in every text of every
// table phonebridge keeps, and in JSON held as bytes (queued events);
// whatsmeow's tables stay as they are. The people known by LID and the
// settled mark go, as before they existed.
func rewriteIDs(t *testing.T, path string, ids map[string]string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tables, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'whatsmeow_%' AND name NOT LIKE 'sqlite_%'`)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for tables.Next() {
		var n string
		if err := tables.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	tables.Close()
	changed := 0
	for _, table := range names {
		cols, err := db.Query(`SELECT name FROM pragma_table_info(?)`, table)
		if err != nil {
			t.Fatal(err)
		}
		var columns []string
		for cols.Next() {
			var c string
			if err := cols.Scan(&c); err != nil {
				t.Fatal(err)
			}
			columns = append(columns, c)
		}
		cols.Close()
		for _, col := range columns {
			for from, to := range ids {
				q := fmt.Sprintf(`UPDATE %[1]q SET %[2]q = CASE typeof(%[2]q)
					WHEN 'text' THEN replace(%[2]q, ?1, ?2)
					ELSE CAST(replace(CAST(%[2]q AS TEXT), ?1, ?2) AS BLOB) END
					WHERE (typeof(%[2]q) = 'text' OR (typeof(%[2]q) = 'blob' AND json_valid(CAST(%[2]q AS TEXT)))) AND instr(CAST(%[2]q AS TEXT), ?1) > 0`, table, col)
				r, err := db.Exec(q, from, to)
				if err != nil {
					t.Fatalf("rewrite %s.%s: %v", table, col, err)
				}
				n, _ := r.RowsAffected()
				changed += int(n)
			}
		}
	}
	for _, q := range []string{`DELETE FROM whatsapp_lid_people`, `UPDATE whatsapp_links SET people_settled = 0`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("rewrote %d values", changed)
	if changed == 0 {
		t.Fatal("no value was rewritten")
	}
}
