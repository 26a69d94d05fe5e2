package whatsapp

import (
	"context"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
)

// TestEditRightAfterItsMessageFindsIt: an edit (or delete, or reaction)
// sent right after the message it acts on finds it. The core hands a
// chat's next delivery over as soon as Send returns, so Send must return
// only once the message's record is committed; otherwise the edit fails
// for good as "not known to link" (seen through the real binary: an API
// client's edit right after its message was dropped).
//
// On the scripted client: the store's writer is held busy to make the
// window certain, and the real whatsmeow client writes its Signal sessions
// to the same database, so it would wait for the writer too and hide it.
func TestEditRightAfterItsMessageFindsIt(t *testing.T) {
	sr := newSendRig(t, nil)

	// Hold the store's writer: writes queue behind this one.
	inside, release := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- sr.store.Write(context.Background(), func(*bridge.Tx) error {
			close(inside)
			<-release
			return nil
		})
	}()
	<-inside
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()

	msg := relayedOut(bridge.KindMessage, bobChat, "pb.1.0")
	msg.Text = "tpyo"
	type result struct {
		id  string
		err error
	}
	sent := make(chan result, 1)
	edited := make(chan result, 1)
	go func() {
		id, err := sr.c.Send(context.Background(), msg)
		sent <- result{id, err}
		if err != nil {
			return
		}
		edit := relayedOut(bridge.KindEdit, bobChat, "pb.2.0")
		edit.Text, edit.Target = "typo", id
		eid, err := sr.c.Send(context.Background(), edit)
		edited <- result{eid, err}
	}()

	// The message went to WhatsApp; only then is the writer let go.
	deadline := time.Now().Add(waitBound)
	for n := 0; n == 0; {
		sr.wa.read(func() { n = len(sr.wa.sent) })
		if time.Now().After(deadline) {
			t.Fatal("the message never reached WhatsApp")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	released = true
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	m := <-sent
	if m.err != nil {
		t.Fatalf("the message: %v", m.err)
	}
	select {
	case e := <-edited:
		if e.err != nil {
			t.Fatalf("the edit right after its message: %v", e.err)
		}
	case <-time.After(waitBound):
		t.Fatal("the edit did not return")
	}
	var last sentMessage
	sr.wa.read(func() { last = sr.wa.sent[len(sr.wa.sent)-1] })
	if pm := last.Msg.GetEditedMessage().GetMessage().GetProtocolMessage(); pm.GetKey().GetID() != m.id {
		t.Errorf("the last message sent is %v, want the edit of %s", last.Msg, m.id)
	}
}
