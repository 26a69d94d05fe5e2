package whatsapp

import (
	"slices"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// The schema of the release before people had one id (b580bed, the parent
// of 3b8136b): its core and WhatsApp migration steps. Matrix, the API and
// IRC have not changed their schema since.
const (
	oldCoreSteps     = 3
	oldWhatsAppSteps = 4
)

// TestOldReleaseDatabaseMigrates starts from a database that the release
// before people had one id left: its schema built by that release's
// migration steps alone, its rows keyed by ids as WhatsApp sent them.
// Bob has a chat under his number and one under his LID (a message of
// each, and one waiting for the destination under his LID); Eve is known
// by LID alone; Bob spoke in Family by LID. A normal start then runs
// every later step with the data present and settles the ids: Bob's LID
// chat moves into his number's, what waited is delivered there, the
// destination and the notices chat are told, Eve keeps her LID, no row is
// lost, and replies by either form to the old messages find their copies.
func TestOldReleaseDatabaseMigrates(t *testing.T) {
	lw := newLinkedWorld(t, fakewa.Options{LIDAddressing: true}, nil)
	// whatsmeow learns Bob's and Eve's pairs, as the old release's did.
	lw.says(t, lw.bob, lw.ann.PN, "hello")
	lw.says(t, lw.eve, lw.ann.PN, "hello")
	stopWithin(t, lw.c)
	ctx := ctxFor(t)
	st := lw.r.store
	var device string
	if err := st.QueryRowContext(ctx, `SELECT jid FROM whatsapp_links WHERE link = 'me'`).Scan(&device); err != nil {
		t.Fatal(err)
	}

	// The old release's schema: phonebridge's own tables made again by its
	// steps alone (whatsmeow's, with the session, stay).
	err := st.Write(ctx, func(tx *bridge.Tx) error {
		for _, table := range []string{"whatsapp_links", "whatsapp_messages", "whatsapp_chats", "whatsapp_history", "whatsapp_placeholders", "whatsapp_lid_people", "whatsapp_timers"} {
			if _, err := tx.Tx.Exec(`DROP TABLE IF EXISTS ` + table); err != nil {
				return err
			}
		}
		_, err := tx.Exec(`DELETE FROM schema_versions WHERE component IN ('whatsapp', 'core')`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx, "whatsapp", migrations[:oldWhatsAppSteps]); err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx, "core", bridge.CoreSchema()[:oldCoreSteps]); err != nil {
		t.Fatal(err)
	}

	bobPN, bobLID := lw.bob.PN.String(), lw.bob.LID.String()
	eveLID, family := lw.eve.LID.String(), lw.family.JID.String()
	at := time.Now().Add(-time.Hour)
	type old struct {
		msg              int64
		chat, id, sender string
		text, copyID     string
	}
	olds := []old{
		{1, bobPN, "OLDB1", bobPN, "bob 1", "dest-old-1"},
		{2, bobLID, "OLDB2", bobLID, "bob by lid", "dest-old-2"},
		{3, eveLID, "OLDE1", eveLID, "eve 1", "dest-old-3"},
		{4, family, "OLDG1", bobLID, "bob in family", "dest-old-4"},
		{5, bobLID, "OLDB3", bobLID, "bob waiting", ""}, // waits in the outbox
	}
	waiting := eventJSON(t, bridge.Event{
		Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: "me", ID: bobLID, Name: "Bob", Direct: true},
		ID: "OLDB3", Sender: bridge.Sender{ID: bobLID, Name: "Bob"}, Text: "bob waiting", Time: at,
	})
	err = st.Write(ctx, func(tx *bridge.Tx) error {
		exec := func(q string, args ...any) error { _, err := tx.Tx.Exec(q, args...); return err }
		if err := exec(`INSERT INTO whatsapp_links (link, jid) VALUES ('me', ?)`, device); err != nil {
			return err
		}
		for _, c := range []struct {
			jid, name string
			grp       bool
		}{{bobPN, "Bob", false}, {bobLID, "Bob", false}, {eveLID, "Eve", false}, {family, "Family", true}} {
			if err := exec(`INSERT INTO whatsapp_chats (link, jid, name, grp) VALUES ('me', ?, ?, ?)`, c.jid, c.name, c.grp); err != nil {
				return err
			}
		}
		for _, o := range olds {
			if err := exec(`INSERT INTO messages (id, kind, origin_connector, origin_chat, origin_native, sender_id, sender_name, text, created_at)
				VALUES (?, 'message', 'me', ?, ?, ?, 'someone', ?, ?)`, o.msg, o.chat, o.id, o.sender, o.text, at.UnixMilli()); err != nil {
				return err
			}
			if err := exec(`INSERT INTO native_ids (connector, chat, native_id, message_id, part, role) VALUES ('me', ?, ?, ?, 0, 0)`, o.chat, o.id, o.msg); err != nil {
				return err
			}
			if o.copyID != "" {
				if err := exec(`INSERT INTO native_ids (connector, chat, native_id, message_id, part, role) VALUES ('dest', ?, ?, ?, 0, 1)`, o.chat, o.copyID, o.msg); err != nil {
					return err
				}
			}
			if err := exec(`INSERT INTO whatsapp_messages (link, chat, id, sender, from_me, text, at) VALUES ('me', ?, ?, ?, 0, ?, ?)`, o.chat, o.id, o.sender, o.text, at.Unix()); err != nil {
				return err
			}
		}
		return exec(`INSERT INTO outbox (connector, chat, event, msg, created_at) VALUES ('dest', ?, ?, 5, ?)`, bobLID, waiting, at.UnixMilli())
	})
	if err != nil {
		t.Fatal(err)
	}

	cr := lw.underCore(t)
	for component, want := range map[string]int{"core": len(bridge.CoreSchema()), "whatsapp": len(migrations)} {
		var v int
		if err := st.QueryRowContext(ctx, `SELECT version FROM schema_versions WHERE component = ?`, component).Scan(&v); err != nil || v != want {
			t.Errorf("the %s schema is at version %d (%v), want %d", component, v, err, want)
		}
	}
	got := cr.await(t, "what waited for Bob's LID chat", func(out bridge.Outgoing) bool { return out.Text == "bob waiting" })
	if got.Chat.ID != bobPN || got.Origin.ID != bobPN || got.Sender.ID != bobPN {
		t.Errorf("what waited for Bob's LID chat went to %q from %q by %q, want his chat by number", got.Chat.ID, got.Origin.ID, got.Sender.ID)
	}
	if moved := cr.dest.Moved("me"); !slices.Equal(moved, []bridge.ChatMove{{From: bobLID, To: bobPN}}) {
		t.Errorf("the destination was told of moves %v, want Bob's LID chat to his number", moved)
	}
	cr.await(t, "the notice of the move", sentText("notices", "dest moved 1 chats of me"))

	// Nothing lost, nothing left under Bob's LID; Eve keeps hers.
	counts := map[string]int{}
	for name, q := range map[string]string{
		"messages":                `SELECT count(*) FROM messages WHERE origin_connector = 'me'`,
		"origin ids":              `SELECT count(*) FROM native_ids WHERE connector = 'me'`,
		"copies":                  `SELECT count(*) FROM native_ids WHERE connector = 'dest' AND native_id LIKE 'dest-old-%'`,
		"whatsapp messages":       `SELECT count(*) FROM whatsapp_messages WHERE link = 'me' AND id LIKE 'OLD%'`,
		"under Bob's LID":         `SELECT (SELECT count(*) FROM native_ids WHERE chat = '` + bobLID + `') + (SELECT count(*) FROM messages WHERE origin_chat = '` + bobLID + `' OR sender_id = '` + bobLID + `') + (SELECT count(*) FROM whatsapp_messages WHERE chat = '` + bobLID + `' OR sender = '` + bobLID + `') + (SELECT count(*) FROM whatsapp_chats WHERE jid = '` + bobLID + `')`,
		"Eve known by LID":        `SELECT count(*) FROM whatsapp_lid_people WHERE link = 'me' AND lid = '` + eveLID + `'`,
		"Bob's messages moved":    `SELECT count(*) FROM whatsapp_messages WHERE link = 'me' AND chat = '` + bobPN + `' AND sender = '` + bobPN + `' AND id IN ('OLDB1', 'OLDB2', 'OLDB3')`,
		"Bob in Family by number": `SELECT count(*) FROM messages WHERE origin_chat = '` + family + `' AND sender_id = '` + bobPN + `'`,
	} {
		var n int
		if err := st.QueryRowContext(ctx, q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		counts[name] = n
	}
	want := map[string]int{"messages": 5, "origin ids": 5, "copies": 4, "whatsapp messages": 5, "under Bob's LID": 0, "Eve known by LID": 1, "Bob's messages moved": 3, "Bob in Family by number": 1}
	for name, n := range want {
		if counts[name] != n {
			t.Errorf("%s: %d rows, want %d", name, counts[name], n)
		}
	}

	// Bob by LID answers his message from his LID chat; Eve by number
	// answers hers: each finds its copy, in the chat it is kept in.
	lw.bob.AddressBy(true)
	if _, err := lw.bob.Send(ctx, lw.ann.PN, replyText("answering by LID", "OLDB2", bobLID)); err != nil {
		t.Fatal(err)
	}
	if got := cr.await(t, "Bob's answer", sentText(bobPN, "answering by LID")); got.ReplyTo != "dest-old-2" || got.Sender.ID != bobPN {
		t.Errorf("Bob's answer by LID came from %q answering %q, want from his number answering dest-old-2", got.Sender.ID, got.ReplyTo)
	}
	lw.eve.AddressBy(false)
	if _, err := lw.eve.Send(ctx, lw.ann.PN, replyText("answering by number", "OLDE1", lw.eve.PN.String())); err != nil {
		t.Fatal(err)
	}
	if got := cr.await(t, "Eve's answer", sentText(eveLID, "answering by number")); got.ReplyTo != "dest-old-3" || got.Sender.ID != eveLID {
		t.Errorf("Eve's answer by number came from %q answering %q, want from her LID answering dest-old-3", got.Sender.ID, got.ReplyTo)
	}
	if n := cr.count(func(out bridge.Outgoing) bool { return out.Chat.ID == bobLID || out.Sender.ID == bobLID }); n != 0 {
		t.Errorf("%d events went to or came from Bob's LID", n)
	}
}
