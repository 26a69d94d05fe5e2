package fakewa

import (
	"testing"

	"go.mau.fi/whatsmeow/types/events"
)

// A call rings the callee's linked devices as an offer naming the call
// and its creator; the client acknowledges it, so nothing stays queued.
func TestCallOffer(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	cl := link(t, srv, alice)
	id := bob.Call(alice, true)
	offer := waitEvent[*events.CallOffer](t, cl, nil)
	if offer.CallID != id || offer.CallCreator.User != bob.PN.User || offer.From.User != bob.PN.User || offer.Data.GetChildByTag("video").Tag != "video" {
		t.Errorf("the client got the call as %+v (%v)", offer.BasicCallMeta, offer.Data)
	}
	waitFor(t, "the call to be acknowledged", func() bool { return srv.Pending(cl.Store.GetJID()) == 0 })
}

// A call's end and its answer on the phone reach the linked devices as
// a terminate (with its reason) and an accept naming the call.
func TestCallEndAndAnswer(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	cl := link(t, srv, alice)
	id := bob.Call(alice, false)
	waitEvent[*events.CallOffer](t, cl, nil)
	alice.AnswerCall(bob, id)
	if acc := waitEvent[*events.CallAccept](t, cl, nil); acc.CallID != id || acc.CallCreator.User != bob.PN.User {
		t.Errorf("the client got the answer as %+v", acc.BasicCallMeta)
	}
	bob.EndCall(alice, id, "timeout")
	if end := waitEvent[*events.CallTerminate](t, cl, nil); end.CallID != id || end.CallCreator.User != bob.PN.User || end.Reason != "timeout" {
		t.Errorf("the client got the end as %+v (reason %q)", end.BasicCallMeta, end.Reason)
	}
	waitFor(t, "the call stanzas to be acknowledged", func() bool { return srv.Pending(cl.Store.GetJID()) == 0 })
}

// A view-once message reaches the recipient's linked devices only as an
// unavailable message of type view_once; the phone has it.
func TestViewOnceUnavailable(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	cl := link(t, srv, alice)
	id, err := bob.SendViewOnce(alice)
	if err != nil {
		t.Fatal(err)
	}
	u := waitEvent[*events.UndecryptableMessage](t, cl, nil)
	if u.Info.ID != id || !u.IsUnavailable || u.UnavailableType != events.UnavailableTypeViewOnce || u.Info.Sender.User != bob.PN.User {
		t.Errorf("the client got the view-once message as %+v", u)
	}
	ctx := ctxT(t)
	if m, err := alice.WaitMessage(ctx, func(m Message) bool { return m.ID == id }); err != nil || m.From != bob.PN {
		t.Errorf("the phone has the view-once message as %+v (%v)", m, err)
	}
	waitFor(t, "the message to be acknowledged", func() bool { return srv.Pending(cl.Store.GetJID()) == 0 })
}
