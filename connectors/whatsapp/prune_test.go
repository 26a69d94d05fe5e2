package whatsapp

import (
	"context"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

func TestPruneForgetsOldMessages(t *testing.T) {
	lw := newLinkedWorld(t, fakewa.Options{}, nil)
	ctx := context.Background()
	bob := lw.bob.PN
	old := lw.says(t, lw.bob, lw.ann.PN, "said long ago")
	recent := lw.says(t, lw.bob, lw.ann.PN, "said just now")
	before := time.Now().Add(-48 * time.Hour).Unix()
	err := lw.r.store.Write(ctx, func(tx *bridge.Tx) error {
		if _, err := tx.Exec(`UPDATE whatsapp_messages SET at = ? WHERE id = ?`, before, old.ID); err != nil {
			return err
		}
		// Another link's old record is not this link's to prune.
		_, err := tx.Exec(`INSERT INTO whatsapp_messages (link, chat, id, sender, from_me, text, at) VALUES ('other', ?, 'OTHER1', ?, 0, 'theirs', ?)`, bobChat, bobChat, before)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	n, err := lw.c.Prune(ctx, time.Now().Add(-24*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1 (the old message)", n, err)
	}
	if ref, err := lw.c.lookup(ctx, bob, old.ID); err != nil || ref != nil {
		t.Errorf("the old message is still known after the prune: %+v, %v", ref, err)
	}
	if ref, err := lw.c.lookup(ctx, bob, recent.ID); err != nil || ref == nil || ref.Text != "said just now" {
		t.Errorf("the recent message = %+v, %v; want it kept", ref, err)
	}
	var others int
	lw.r.store.QueryRow(`SELECT COUNT(*) FROM whatsapp_messages WHERE link = 'other'`).Scan(&others)
	if others != 1 {
		t.Errorf("another link's record was pruned")
	}
	if n, err := lw.c.Prune(ctx, time.Now().Add(-24*time.Hour)); err != nil || n != 0 {
		t.Errorf("second Prune = %d, %v; want 0", n, err)
	}

	// A reply to the pruned message still goes, without its context.
	out := fromCarol(bridge.KindMessage, bob, "pb.reply.pruned")
	out.Text, out.ReplyTo = "answer", old.ID
	lw.send(t, out)
	m := lw.got(t, lw.bob, bob, "pb.reply.pruned", 1)[0].Msg
	if m.GetConversation() != "*Carol*: answer" || contextOf(m) != nil {
		t.Errorf("a reply to a pruned message reached the phone as %v, want the text alone", m)
	}
}
