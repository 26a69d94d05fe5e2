package whatsapp

import (
	"encoding/json"
	"reflect"
	"testing"

	"go.mau.fi/whatsmeow/proto/waCommon"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"google.golang.org/protobuf/proto"

	"github.com/phonebridge/phonebridge/bridge"
)

// FuzzConvertIncoming feeds arbitrary WhatsApp messages (protobuf bytes,
// as a peer could send them) through the converter: whatever it relays
// must be an event the core accepts.
func FuzzConvertIncoming(f *testing.F) {
	key := &waCommon.MessageKey{ID: proto.String("3EB0T")}
	for _, m := range []*waE2E.Message{
		{Conversation: proto.String("*hi* _there_")},
		{ExtendedTextMessage: &waE2E.ExtendedTextMessage{Text: proto.String("r"), ContextInfo: &waE2E.ContextInfo{StanzaID: proto.String("Q")}}},
		{ImageMessage: &waE2E.ImageMessage{DirectPath: proto.String("/p"), MediaKey: []byte{1}, Caption: proto.String("c")}},
		{DocumentWithCaptionMessage: &waE2E.FutureProofMessage{Message: &waE2E.Message{DocumentMessage: &waE2E.DocumentMessage{FileName: proto.String("../a")}}}},
		{AudioMessage: &waE2E.AudioMessage{PTT: proto.Bool(true)}},
		{StickerMessage: &waE2E.StickerMessage{}},
		{LocationMessage: &waE2E.LocationMessage{DegreesLatitude: proto.Float64(1)}},
		{ContactsArrayMessage: &waE2E.ContactsArrayMessage{Contacts: []*waE2E.ContactMessage{{Vcard: proto.String("FN:x")}}}},
		{PollCreationMessageV3: &waE2E.PollCreationMessage{Name: proto.String("?"), Options: []*waE2E.PollCreationMessage_Option{{OptionName: proto.String("a")}}}},
		{ReactionMessage: &waE2E.ReactionMessage{Key: key, Text: proto.String("")}},
		{ProtocolMessage: &waE2E.ProtocolMessage{Type: waE2E.ProtocolMessage_REVOKE.Enum(), Key: key}},
		editProto(aliceJID, "3EB0T", &waE2E.Message{Conversation: proto.String("e")}),
		{ProtocolMessage: &waE2E.ProtocolMessage{Type: waE2E.ProtocolMessage_EPHEMERAL_SETTING.Enum()}},
		{PinInChatMessage: &waE2E.PinInChatMessage{Key: key, Type: waE2E.PinInChatMessage_PIN_FOR_ALL.Enum()}},
		{EphemeralMessage: &waE2E.FutureProofMessage{Message: &waE2E.Message{ViewOnceMessage: &waE2E.FutureProofMessage{}}}},
		{GroupInviteMessage: &waE2E.GroupInviteMessage{}},
		{SenderKeyDistributionMessage: &waE2E.SenderKeyDistributionMessage{}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false, false)
		f.Add(b, true, true)
	}
	f.Fuzz(func(t *testing.T, raw []byte, fromMe, group bool) {
		var m waE2E.Message
		if proto.Unmarshal(raw, &m) != nil {
			return
		}
		info := infoDM(aliceJID, "3EB0FUZZ")
		if group {
			info = infoGroup(aliceJID, "3EB0FUZZ")
		}
		if fromMe {
			info.Sender, info.IsFromMe = ownerJID, true
		}
		in, ok := convertIncoming(dispatched(info, &m), "Alice")
		if !ok {
			return
		}
		ev := in.Event
		if err := ev.Check(); err != nil {
			t.Fatalf("relayed an event the core refuses (%v): %+v", err, ev)
		}
		if ev.ID != info.ID || ev.Sender.IsOwner != fromMe || ev.Chat.ID != info.Chat.String() {
			t.Fatalf("event %+v does not say who sent it where", ev)
		}
		switch ev.Kind {
		case bridge.KindMessage:
			// A message is remembered, to be replied and reacted to.
			if in.Ref.ID != info.ID && !ev.Notice {
				t.Fatalf("message %+v is remembered as %+v", ev, in.Ref)
			}
		case bridge.KindEdit, bridge.KindDelete, bridge.KindReaction, bridge.KindReactionRemove:
			if !reflect.DeepEqual(in.Ref, msgRef{}) {
				t.Fatalf("%s %+v is remembered as a message: %+v", ev.Kind, ev, in.Ref)
			}
		default:
			t.Fatalf("relayed a %s: %+v", ev.Kind, ev)
		}
		if ev.HTML != "" {
			checkWellFormed(t, ev.Text, ev.HTML)
		}
		for _, md := range ev.Media {
			var r mediaRef
			if json.Unmarshal([]byte(md.Ref), &r) != nil || r.Kind == "" || md.MIME == "" || md.Name == "" || md.Size < 0 {
				t.Fatalf("attachment %+v is not described", md)
			}
		}
	})
}
