package whatsapp

import (
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waCommon"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"

	"github.com/phonebridge/phonebridge/bridge"
)

func TestTextMessage(t *testing.T) {
	quoted := &msgRef{Chat: groupJID, ID: "3EB0QUOTED", Sender: onDevice(aliceJID, 5), Text: "the *question*"}
	reply := func(text string) *waE2E.Message {
		return &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{
			Text: proto.String(text),
			ContextInfo: &waE2E.ContextInfo{
				StanzaID:      proto.String("3EB0QUOTED"),
				Participant:   proto.String(aliceJID.String()),
				QuotedMessage: &waE2E.Message{Conversation: proto.String("the *question*")},
			},
		}}
	}
	tests := []struct {
		name, text, html string
		quoted           *msgRef
		want             *waE2E.Message
	}{
		{name: "plain", text: "hello", want: &waE2E.Message{Conversation: proto.String("hello")}},
		{name: "plain text is sent as it is", text: "a <b> & *c*", want: &waE2E.Message{Conversation: proto.String("a <b> & *c*")}},
		{
			name: "formatting becomes markup",
			text: "bold italic strike code", html: "<b>bold</b> <i>italic</i> <s>strike</s> <code>code</code>",
			want: &waE2E.Message{Conversation: proto.String("*bold* _italic_ ~strike~ `code`")},
		},
		{
			name: "Matrix formatting",
			text: "> quote\n\nanswer", html: "<blockquote><p>quote</p></blockquote><p><strong>answer</strong></p><pre><code>x := 1\n</code></pre>",
			want: &waE2E.Message{Conversation: proto.String("> quote\n\n*answer*\n\n```x := 1```")},
		},
		{
			// HTML that says nothing WhatsApp can show: the text goes instead.
			name: "HTML with nothing to show",
			text: "fallback", html: "<mx-reply><blockquote>old</blockquote></mx-reply>",
			want: &waE2E.Message{Conversation: proto.String("fallback")},
		},
		{name: "reply", text: "answer", quoted: quoted, want: reply("answer")},
		{name: "formatted reply", text: "answer", html: "<em>answer</em>", quoted: quoted, want: reply("_answer_")},
		{
			name: "reply in a direct chat to own message without sender",
			text: "again", quoted: &msgRef{Chat: aliceJID, ID: "3EB0MINE", FromMe: true},
			want: &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{
				Text: proto.String("again"),
				ContextInfo: &waE2E.ContextInfo{
					StanzaID:      proto.String("3EB0MINE"),
					QuotedMessage: &waE2E.Message{Conversation: proto.String("")},
				},
			}},
		},
		{name: "quoted message without id is no reply", text: "x", quoted: &msgRef{Text: "?"}, want: &waE2E.Message{Conversation: proto.String("x")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := textMessage(tt.text, tt.html, tt.quoted); !proto.Equal(got, tt.want) {
				t.Errorf("textMessage(%q, %q)\n got %v\nwant %v", tt.text, tt.html, got, tt.want)
			}
		})
	}
}

// TestTextMessageRoundTrip: a sent reply, seen again as WhatsApp echoes it,
// is a reply to the same message with the same formatting.
func TestTextMessageRoundTrip(t *testing.T) {
	msg := textMessage("bold", "<b>bold</b> move", &msgRef{ID: "3EB0Q", Sender: bobJID})
	got, ok := convertIncoming(dispatched(infoOwner(groupJID, "3EB0SENT"), msg), "Me")
	if !ok {
		t.Fatal("the sent message does not convert")
	}
	ev := got.Event
	if ev.Text != "*bold* move" || ev.HTML != "<b>bold</b> move" || ev.ReplyTo != "3EB0Q" || !ev.Sender.IsOwner {
		t.Errorf("got text %q, HTML %q, reply to %q, owner %v; want *bold* move, <b>bold</b> move, 3EB0Q, true",
			ev.Text, ev.HTML, ev.ReplyTo, ev.Sender.IsOwner)
	}
}

// withEditClock fixes edit timestamps at now for the rest of the test.
func withEditClock(t *testing.T, now time.Time) {
	t.Helper()
	old := editNow
	editNow = func() time.Time { return now }
	t.Cleanup(func() { editNow = old })
}

func TestEditMessage(t *testing.T) {
	withEditClock(t, convSentAt)
	got := editMessage(onDevice(groupJID, 0), "3EB0MINE", textMessage("new", "<b>new</b>", nil))
	want := &waE2E.Message{EditedMessage: &waE2E.FutureProofMessage{Message: &waE2E.Message{
		ProtocolMessage: &waE2E.ProtocolMessage{
			Key: &waCommon.MessageKey{
				RemoteJID: proto.String("120363000000000001@g.us"),
				FromMe:    proto.Bool(true),
				ID:        proto.String("3EB0MINE"),
			},
			Type:          waE2E.ProtocolMessage_MESSAGE_EDIT.Enum(),
			EditedMessage: &waE2E.Message{Conversation: proto.String("*new*")},
			TimestampMS:   proto.Int64(convSentAt.UnixMilli()),
		},
	}}}
	if !proto.Equal(got, want) {
		t.Fatalf("editMessage\n got %v\nwant %v", got, want)
	}

	// The owner's phone sees it as an edit of the same message.
	in, ok := convertIncoming(dispatched(infoOwner(groupJID, "3EB0EDIT"), got), "Me")
	if !ok || in.Event.Kind != bridge.KindEdit || in.Event.Target != "3EB0MINE" || in.Event.Text != "*new*" || in.Event.HTML != "<b>new</b>" {
		t.Errorf("the edit converts back to ok %v, %+v", ok, in.Event)
	}
}

func TestRevokeMessage(t *testing.T) {
	self := onDevice(ownerJID, 12)
	key := func(chat types.JID, fromMe bool, participant string) *waCommon.MessageKey {
		k := &waCommon.MessageKey{RemoteJID: proto.String(chat.String()), FromMe: proto.Bool(fromMe), ID: proto.String("3EB0T")}
		if participant != "" {
			k.Participant = proto.String(participant)
		}
		return k
	}
	tests := []struct {
		name   string
		chat   types.JID
		target msgRef
		want   *waCommon.MessageKey
	}{
		{"own message, remembered so", groupJID, msgRef{ID: "3EB0T", Sender: ownerJID, FromMe: true}, key(groupJID, true, "")},
		{"own message from another device", groupJID, msgRef{ID: "3EB0T", Sender: onDevice(ownerJID, 3)}, key(groupJID, true, "")},
		{"message without known sender", aliceJID, msgRef{ID: "3EB0T"}, key(aliceJID, true, "")},
		{"someone else's in a group (as admin)", groupJID, msgRef{ID: "3EB0T", Sender: onDevice(aliceJID, 2)}, key(groupJID, false, "15550001111@s.whatsapp.net")},
		{"LID member's in a group", groupJID, msgRef{ID: "3EB0T", Sender: aliceLID}, key(groupJID, false, "987654321012345@lid")},
		{"the other side's in a direct chat", aliceJID, msgRef{ID: "3EB0T", Sender: aliceJID}, key(aliceJID, false, "")},
		{"the other side's in a LID direct chat", aliceLID, msgRef{ID: "3EB0T", Sender: aliceLID}, key(aliceLID, false, "")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := revokeMessage(tt.chat, tt.target, self)
			want := &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{Type: waE2E.ProtocolMessage_REVOKE.Enum(), Key: tt.want}}
			if !proto.Equal(got, want) {
				t.Fatalf("revokeMessage\n got %v\nwant %v", got, want)
			}
			in, ok := convertIncoming(dispatched(infoOwner(tt.chat, "3EB0REVOKE"), got), "Me")
			if !ok || in.Event.Kind != bridge.KindDelete || in.Event.Target != "3EB0T" {
				t.Errorf("the revoke converts back to ok %v, %+v", ok, in.Event)
			}
		})
	}
}

func TestReactionMessage(t *testing.T) {
	at := convSentAt.Add(1500 * time.Millisecond)
	tests := []struct {
		name   string
		target msgRef
		emoji  string
		key    *waCommon.MessageKey
		kind   bridge.Kind
	}{
		{"to someone's message in a group", msgRef{ID: "3EB0T", Sender: aliceJID}, "👍",
			&waCommon.MessageKey{RemoteJID: proto.String(groupJID.String()), FromMe: proto.Bool(false), ID: proto.String("3EB0T"), Participant: proto.String(aliceJID.String())},
			bridge.KindReaction},
		{"to own message", msgRef{ID: "3EB0T", Sender: ownerJID, FromMe: true}, "😂",
			&waCommon.MessageKey{RemoteJID: proto.String(groupJID.String()), FromMe: proto.Bool(true), ID: proto.String("3EB0T")},
			bridge.KindReaction},
		// An empty reaction removes the account's reaction.
		{"removal", msgRef{ID: "3EB0T", Sender: aliceJID}, "",
			&waCommon.MessageKey{RemoteJID: proto.String(groupJID.String()), FromMe: proto.Bool(false), ID: proto.String("3EB0T"), Participant: proto.String(aliceJID.String())},
			bridge.KindReactionRemove},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := reactionMessage(groupJID, tt.target, ownerJID, tt.emoji, at)
			want := &waE2E.Message{ReactionMessage: &waE2E.ReactionMessage{
				Key: tt.key, Text: proto.String(tt.emoji), SenderTimestampMS: proto.Int64(at.UnixMilli()),
			}}
			if !proto.Equal(got, want) {
				t.Fatalf("reactionMessage\n got %v\nwant %v", got, want)
			}
			// WhatsApp reads a removal only from a present, empty text.
			if got.GetReactionMessage().Text == nil {
				t.Error("the reaction has no text field")
			}
			in, ok := convertIncoming(dispatched(infoOwner(groupJID, "3EB0REACT"), got), "Me")
			if !ok || in.Event.Kind != tt.kind || in.Event.Target != "3EB0T" || in.Event.Emoji != tt.emoji {
				t.Errorf("the reaction converts back to ok %v, %+v", ok, in.Event)
			}
		})
	}
}
