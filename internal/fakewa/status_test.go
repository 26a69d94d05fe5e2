package fakewa

import (
	"testing"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

// TestPostStatus: a status update reaches the audience's linked devices
// as WhatsApp's do, from status@broadcast with the poster as sender (by
// LID here; by phone number in connectors/whatsapp's tests), and
// decrypts; a second one uses the sender key the first distributed.
func TestPostStatus(t *testing.T) {
	srv := newServer(t, Options{LIDAddressing: true})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	cl := link(t, srv, alice)
	for _, text := range []string{"my story", "and more"} {
		if _, err := bob.PostStatus(ctxT(t), &waE2E.Message{Conversation: proto.String(text)}, alice); err != nil {
			t.Fatal(err)
		}
		m := waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Message.GetConversation() == text })
		if m.Info.Chat != types.StatusBroadcastJID || m.Info.Sender.ToNonAD() != bob.LID || m.Info.SenderAlt.ToNonAD() != bob.PN {
			t.Errorf("%q came in %s from %s (%s), want status@broadcast from Bob", text, m.Info.Chat, m.Info.Sender, m.Info.SenderAlt)
		}
	}
}
