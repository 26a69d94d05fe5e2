package whatsapp

import (
	"context"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
)

func TestPruneForgetsOldMessages(t *testing.T) {
	sr := newSendRig(t, nil)
	ctx := context.Background()
	sr.receive(t, bobChat, bobChat, "OLD1", "said long ago")
	sr.receive(t, bobChat, bobChat, "NEW1", "said just now")
	old := time.Now().Add(-48 * time.Hour).Unix()
	err := sr.store.Write(ctx, func(tx *bridge.Tx) error {
		if _, err := tx.Exec(`UPDATE whatsapp_messages SET at = ? WHERE id = 'OLD1'`, old); err != nil {
			return err
		}
		// Another link's old record is not this link's to prune.
		_, err := tx.Exec(`INSERT INTO whatsapp_messages (link, chat, id, sender, from_me, text, at) VALUES ('other', ?, 'OTHER1', ?, 0, 'theirs', ?)`, bobChat, bobChat, old)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	n, err := sr.c.Prune(ctx, time.Now().Add(-24*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1 (OLD1)", n, err)
	}
	chat := mustJID(t, bobChat)
	if ref, err := sr.c.lookup(ctx, chat, "OLD1"); err != nil || ref != nil {
		t.Errorf("OLD1 still known after the prune: %+v, %v", ref, err)
	}
	if ref, err := sr.c.lookup(ctx, chat, "NEW1"); err != nil || ref == nil || ref.Text != "said just now" {
		t.Errorf("NEW1 = %+v, %v; want it kept", ref, err)
	}
	var others int
	sr.store.QueryRow(`SELECT COUNT(*) FROM whatsapp_messages WHERE link = 'other'`).Scan(&others)
	if others != 1 {
		t.Errorf("another link's record was pruned")
	}
	if n, err := sr.c.Prune(ctx, time.Now().Add(-24*time.Hour)); err != nil || n != 0 {
		t.Errorf("second Prune = %d, %v; want 0", n, err)
	}

	// A reply to the pruned message still goes, without its context.
	out := relayedOut(bridge.KindMessage, bobChat, "pb.reply.pruned")
	out.Text, out.ReplyTo = "answer", "OLD1"
	_, sent, err := sr.send(t, out)
	msg := sentOne(t, sent, err, bobChat)
	if msg.GetExtendedTextMessage().GetContextInfo().GetStanzaID() != "" {
		t.Errorf("reply to a pruned message names it: %v", msg)
	}
	if msg.GetConversation()+msg.GetExtendedTextMessage().GetText() != "*Bob*: answer" {
		t.Errorf("sent %v, want the text", msg)
	}
}
