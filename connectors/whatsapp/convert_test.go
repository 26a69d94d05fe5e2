package whatsapp

import (
	"reflect"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waCommon"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"

	"github.com/phonebridge/phonebridge/bridge"
)

// The people and chats of the inbound tests.
var (
	aliceJID   = types.NewJID("15550001111", types.DefaultUserServer)
	bobJID     = types.NewJID("15550002222", types.DefaultUserServer)
	ownerJID   = types.NewJID("15559990000", types.DefaultUserServer)
	aliceLID   = types.NewJID("987654321012345", types.HiddenUserServer)
	groupJID   = types.NewJID("120363000000000001", types.GroupServer)
	convSentAt = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
)

// onDevice is jid as one of its owner's devices, as WhatsApp addresses senders.
func onDevice(jid types.JID, dev uint16) types.JID {
	jid.Device = dev
	return jid
}

// infoDM is the info of message id that sender sent in their direct chat
// with the owner.
func infoDM(sender types.JID, id string) types.MessageInfo {
	return types.MessageInfo{
		MessageSource: types.MessageSource{Chat: sender.ToNonAD(), Sender: sender},
		ID:            id,
		Timestamp:     convSentAt,
	}
}

// infoGroup is the info of message id that sender sent in groupJID.
func infoGroup(sender types.JID, id string) types.MessageInfo {
	return types.MessageInfo{
		MessageSource: types.MessageSource{Chat: groupJID, Sender: sender, IsGroup: true},
		ID:            id,
		Timestamp:     convSentAt,
	}
}

// infoOwner is the info of message id the owner sent from the phone to chat.
func infoOwner(chat types.JID, id string) types.MessageInfo {
	return types.MessageInfo{
		MessageSource: types.MessageSource{Chat: chat, Sender: onDevice(ownerJID, 0), IsFromMe: true, IsGroup: chat.Server == types.GroupServer},
		ID:            id,
		Timestamp:     convSentAt,
	}
}

// dispatched is the event whatsmeow dispatches for raw as it came off the
// wire: unwrapped by UnwrapRaw, the raw message kept alongside.
func dispatched(info types.MessageInfo, raw *waE2E.Message) *events.Message {
	return (&events.Message{Info: info, RawMessage: raw}).UnwrapRaw()
}

// neutralEvent is the event convertIncoming should make of a message that
// info describes, before the kind-specific fields are filled in.
func neutralEvent(info types.MessageInfo, name string) bridge.Event {
	return bridge.Event{
		Kind:   bridge.KindMessage,
		Chat:   bridge.ChatRef{ID: info.Chat.ToNonAD().String(), Direct: !info.IsGroup},
		ID:     info.ID,
		Sender: bridge.Sender{ID: info.Sender.ToNonAD().String(), Name: name, IsOwner: info.IsFromMe},
		Time:   info.Timestamp,
	}
}

// msgRefOf is the msgRef convertIncoming should remember for a message that
// info describes, with text as its quoted preview.
func msgRefOf(info types.MessageInfo, text string) msgRef {
	return msgRef{Chat: info.Chat.ToNonAD(), ID: info.ID, Sender: info.Sender.ToNonAD(), FromMe: info.IsFromMe, Text: text}
}

// checkIncoming fails unless evt converts to exactly want and ref, and the
// event is one the core accepts.
func checkIncoming(t *testing.T, evt *events.Message, name string, want bridge.Event, ref msgRef) {
	t.Helper()
	got, ok := convertIncoming(evt, name)
	if !ok {
		t.Fatalf("convertIncoming skipped the message; want %+v", want)
	}
	if !reflect.DeepEqual(got.Event, want) {
		t.Errorf("event\n got %+v\nwant %+v", got.Event, want)
	}
	if !reflect.DeepEqual(got.Ref, ref) {
		t.Errorf("ref\n got %+v\nwant %+v", got.Ref, ref)
	}
	if err := got.Event.Check(); err != nil {
		t.Errorf("the core would refuse the event: %v", err)
	}
}

func TestConvertIncomingText(t *testing.T) {
	reply := &waE2E.ContextInfo{
		StanzaID:      proto.String("3EB0QUOTED"),
		Participant:   proto.String(bobJID.String()),
		QuotedMessage: &waE2E.Message{Conversation: proto.String("the question")},
	}
	tests := []struct {
		name    string
		msg     *waE2E.Message
		text    string
		html    string
		replyTo string
	}{
		{
			name: "conversation",
			msg:  &waE2E.Message{Conversation: proto.String("hello there")},
			text: "hello there",
		},
		{
			name: "extended text",
			msg:  &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{Text: proto.String("see https://example.org")}},
			text: "see https://example.org",
		},
		{
			name: "every WhatsApp style",
			msg:  &waE2E.Message{Conversation: proto.String("*bold* _italic_ ~strike~ ```mono```")},
			text: "*bold* _italic_ ~strike~ ```mono```",
			html: "<b>bold</b> <i>italic</i> <s>strike</s> <code>mono</code>",
		},
		{
			name: "code block and quote over lines",
			msg:  &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{Text: proto.String("> cited\n```a\nb```\n_end_")}},
			text: "> cited\n```a\nb```\n_end_",
			html: "<blockquote>cited</blockquote><pre>a\nb</pre><i>end</i>",
		},
		{
			// No markup: HTML stays empty, even though the text has
			// characters HTML would escape.
			name: "no markup",
			msg:  &waE2E.Message{Conversation: proto.String("a < b & 2*3*4\nsnake_case")},
			text: "a < b & 2*3*4\nsnake_case",
		},
		{
			name:    "reply",
			msg:     &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{Text: proto.String("the *answer*"), ContextInfo: reply}},
			text:    "the *answer*",
			html:    "the <b>answer</b>",
			replyTo: "3EB0QUOTED",
		},
		{
			// Mentions and forwards carry a context without a quoted id.
			name: "mention is no reply",
			msg: &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{
				Text:        proto.String("hi @15550002222"),
				ContextInfo: &waE2E.ContextInfo{MentionedJID: []string{bobJID.String()}, IsForwarded: proto.Bool(true)},
			}},
			text: "hi @15550002222",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := infoDM(onDevice(aliceJID, 2), "3EB0"+tt.name)
			want := neutralEvent(info, "Alice")
			want.Text, want.HTML, want.ReplyTo = tt.text, tt.html, tt.replyTo
			checkIncoming(t, dispatched(info, tt.msg), "Alice", want, msgRefOf(info, tt.text))
		})
	}
}

// TestConvertIncomingSender: the sender is the person without device, the
// name is the caller's, and the owner's own messages are marked so.
func TestConvertIncomingSender(t *testing.T) {
	text := &waE2E.Message{Conversation: proto.String("hi")}
	tests := []struct {
		name       string
		info       types.MessageInfo
		raw        *waE2E.Message
		senderName string
		sender     bridge.Sender
		chat       string
	}{
		{
			name:       "contact in a direct chat",
			info:       infoDM(onDevice(aliceJID, 7), "A1"),
			raw:        text,
			senderName: "Alice",
			sender:     bridge.Sender{ID: "15550001111@s.whatsapp.net", Name: "Alice"},
			chat:       "15550001111@s.whatsapp.net",
		},
		{
			name:   "no name known",
			info:   infoGroup(onDevice(bobJID, 1), "B1"),
			raw:    text,
			sender: bridge.Sender{ID: "15550002222@s.whatsapp.net"},
			chat:   "120363000000000001@g.us",
		},
		{
			name:       "LID-addressed group member",
			info:       infoGroup(aliceLID, "L1"),
			raw:        text,
			senderName: "Alice",
			sender:     bridge.Sender{ID: "987654321012345@lid", Name: "Alice"},
			chat:       "120363000000000001@g.us",
		},
		{
			name:       "owner from the phone, to a group",
			info:       infoOwner(groupJID, "O1"),
			raw:        text,
			senderName: "Me",
			sender:     bridge.Sender{ID: "15559990000@s.whatsapp.net", Name: "Me", IsOwner: true},
			chat:       "120363000000000001@g.us",
		},
		{
			// What the phone sends to a direct chat reaches linked
			// devices wrapped in a DeviceSentMessage.
			name: "owner from the phone, to a direct chat",
			info: infoOwner(aliceJID, "O2"),
			raw: &waE2E.Message{DeviceSentMessage: &waE2E.DeviceSentMessage{
				DestinationJID: proto.String(aliceJID.String()),
				Message:        text,
			}},
			senderName: "Me",
			sender:     bridge.Sender{ID: "15559990000@s.whatsapp.net", Name: "Me", IsOwner: true},
			chat:       "15550001111@s.whatsapp.net",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := bridge.Event{
				Kind: bridge.KindMessage, Chat: bridge.ChatRef{ID: tt.chat, Direct: !tt.info.IsGroup}, ID: tt.info.ID,
				Sender: tt.sender, Time: convSentAt, Text: "hi",
			}
			checkIncoming(t, dispatched(tt.info, tt.raw), tt.senderName, want, msgRefOf(tt.info, "hi"))
		})
	}
}

// TestConvertIncomingWrappers: envelopes are opened, whether whatsmeow
// unwrapped the message already or only the raw message is set.
func TestConvertIncomingWrappers(t *testing.T) {
	text := &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{Text: proto.String("inside")}}
	wrap := func(m *waE2E.Message) *waE2E.FutureProofMessage { return &waE2E.FutureProofMessage{Message: m} }
	tests := []struct {
		name string
		raw  *waE2E.Message
	}{
		{"ephemeral", &waE2E.Message{EphemeralMessage: wrap(text)}},
		{"view once", &waE2E.Message{ViewOnceMessage: wrap(text)}},
		{"view once v2", &waE2E.Message{ViewOnceMessageV2: wrap(text)}},
		{"ephemeral view once", &waE2E.Message{EphemeralMessage: wrap(&waE2E.Message{ViewOnceMessageV2Extension: wrap(text)})}},
		{"bot invoke", &waE2E.Message{BotInvokeMessage: wrap(text)}},
		{"group mention", &waE2E.Message{GroupMentionedMessage: wrap(text)}},
		{"envelope with context info", &waE2E.Message{
			EphemeralMessage:   wrap(text),
			MessageContextInfo: &waE2E.MessageContextInfo{MessageSecret: []byte{1, 2, 3}},
		}},
		{"envelope with key distribution", &waE2E.Message{
			EphemeralMessage:             wrap(text),
			SenderKeyDistributionMessage: &waE2E.SenderKeyDistributionMessage{GroupID: proto.String(groupJID.String())},
		}},
		{"device sent, ephemeral", &waE2E.Message{DeviceSentMessage: &waE2E.DeviceSentMessage{
			DestinationJID: proto.String(aliceJID.String()),
			Message:        &waE2E.Message{EphemeralMessage: wrap(text)},
		}}},
	}
	for _, tt := range tests {
		info := infoGroup(aliceJID, "W1")
		want := neutralEvent(info, "Alice")
		want.Text = "inside"
		t.Run(tt.name+"/unwrapped", func(t *testing.T) {
			checkIncoming(t, dispatched(info, tt.raw), "Alice", want, msgRefOf(info, "inside"))
		})
		t.Run(tt.name+"/raw only", func(t *testing.T) {
			checkIncoming(t, &events.Message{Info: info, RawMessage: tt.raw}, "Alice", want, msgRefOf(info, "inside"))
		})
	}
}

// editProto is how WhatsApp sends an edit of id in chat: a MESSAGE_EDIT
// protocol message in an EditedMessage envelope.
func editProto(chat types.JID, id string, newContent *waE2E.Message) *waE2E.Message {
	return &waE2E.Message{EditedMessage: &waE2E.FutureProofMessage{Message: &waE2E.Message{
		ProtocolMessage: &waE2E.ProtocolMessage{
			Key:           &waCommon.MessageKey{RemoteJID: proto.String(chat.String()), FromMe: proto.Bool(true), ID: proto.String(id)},
			Type:          waE2E.ProtocolMessage_MESSAGE_EDIT.Enum(),
			EditedMessage: newContent,
			TimestampMS:   proto.Int64(convSentAt.UnixMilli()),
		},
	}}}
}

func TestConvertIncomingEdit(t *testing.T) {
	tests := []struct {
		name       string
		raw        *waE2E.Message
		text, html string
	}{
		{
			name: "text in an EditedMessage envelope",
			raw:  editProto(aliceJID, "3EB0ORIG", &waE2E.Message{Conversation: proto.String("fixed *typo*")}),
			text: "fixed *typo*",
			html: "fixed <b>typo</b>",
		},
		{
			name: "extended text",
			raw:  editProto(aliceJID, "3EB0ORIG", &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{Text: proto.String("new text")}}),
			text: "new text",
		},
		{
			// A caption edit carries the media message with the new caption.
			name: "caption",
			raw:  editProto(aliceJID, "3EB0ORIG", &waE2E.Message{ImageMessage: &waE2E.ImageMessage{Caption: proto.String("new caption")}}),
			text: "new caption",
		},
		{
			name: "bare protocol message",
			raw: &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{
				Key:           &waCommon.MessageKey{ID: proto.String("3EB0ORIG")},
				Type:          waE2E.ProtocolMessage_MESSAGE_EDIT.Enum(),
				EditedMessage: &waE2E.Message{Conversation: proto.String("bare")},
			}},
			text: "bare",
		},
		{
			name: "new content in an ephemeral envelope",
			raw: editProto(aliceJID, "3EB0ORIG", &waE2E.Message{EphemeralMessage: &waE2E.FutureProofMessage{
				Message: &waE2E.Message{Conversation: proto.String("vanishing")},
			}}),
			text: "vanishing",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := infoDM(aliceJID, "3EB0EDIT")
			want := neutralEvent(info, "Alice")
			want.Kind, want.Target, want.Text, want.HTML = bridge.KindEdit, "3EB0ORIG", tt.text, tt.html
			checkIncoming(t, dispatched(info, tt.raw), "Alice", want, msgRef{})
		})
	}
}

func TestConvertIncomingRevoke(t *testing.T) {
	revoke := func(key *waCommon.MessageKey) *waE2E.Message {
		return &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{Type: waE2E.ProtocolMessage_REVOKE.Enum(), Key: key}}
	}
	tests := []struct {
		name string
		info types.MessageInfo
		raw  *waE2E.Message
	}{
		{"own message", infoDM(aliceJID, "R1"), revoke(&waCommon.MessageKey{
			RemoteJID: proto.String(aliceJID.String()), FromMe: proto.Bool(true), ID: proto.String("3EB0TARGET")})},
		{"admin deletes a member's message", infoGroup(bobJID, "R2"), revoke(&waCommon.MessageKey{
			RemoteJID: proto.String(groupJID.String()), FromMe: proto.Bool(false), ID: proto.String("3EB0TARGET"),
			Participant: proto.String(aliceJID.String())})},
		{"owner deletes from the phone", infoOwner(groupJID, "R3"), revoke(&waCommon.MessageKey{
			RemoteJID: proto.String(groupJID.String()), FromMe: proto.Bool(true), ID: proto.String("3EB0TARGET")})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := neutralEvent(tt.info, "Name")
			want.Kind, want.Target = bridge.KindDelete, "3EB0TARGET"
			checkIncoming(t, dispatched(tt.info, tt.raw), "Name", want, msgRef{})
		})
	}
}

func TestConvertIncomingReaction(t *testing.T) {
	react := func(text *string) *waE2E.Message {
		return &waE2E.Message{ReactionMessage: &waE2E.ReactionMessage{
			Key:               &waCommon.MessageKey{RemoteJID: proto.String(groupJID.String()), ID: proto.String("3EB0TARGET"), Participant: proto.String(bobJID.String())},
			Text:              text,
			SenderTimestampMS: proto.Int64(convSentAt.UnixMilli()),
		}}
	}
	tests := []struct {
		name  string
		info  types.MessageInfo
		raw   *waE2E.Message
		kind  bridge.Kind
		emoji string
	}{
		{"reaction", infoGroup(aliceJID, "X1"), react(proto.String("👍")), bridge.KindReaction, "👍"},
		{"emoji with modifier", infoGroup(aliceJID, "X2"), react(proto.String("👍🏽")), bridge.KindReaction, "👍🏽"},
		{"owner reacts from the phone", infoOwner(groupJID, "X3"), react(proto.String("❤️")), bridge.KindReaction, "❤️"},
		// WhatsApp does not say which reaction goes: the core fills it in.
		{"removal", infoGroup(aliceJID, "X4"), react(proto.String("")), bridge.KindReactionRemove, ""},
		{"removal without text", infoGroup(aliceJID, "X5"), react(nil), bridge.KindReactionRemove, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := neutralEvent(tt.info, "Alice")
			want.Kind, want.Target, want.Emoji = tt.kind, "3EB0TARGET", tt.emoji
			// WhatsApp keeps one reaction per person: a new one replaces.
			want.ReplacesReaction = tt.kind == bridge.KindReaction
			checkIncoming(t, dispatched(tt.info, tt.raw), "Alice", want, msgRef{})
		})
	}
}

// TestConvertIncomingNotices: pins and disappearing-message settings in
// direct chats are notices by whoever did it.
func TestConvertIncomingNotices(t *testing.T) {
	pin := func(typ waE2E.PinInChatMessage_Type) *waE2E.Message {
		return &waE2E.Message{PinInChatMessage: &waE2E.PinInChatMessage{
			Key:  &waCommon.MessageKey{ID: proto.String("3EB0PINNED")},
			Type: typ.Enum(),
		}}
	}
	timer := func(seconds uint32) *waE2E.Message {
		return &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{
			Type:                waE2E.ProtocolMessage_EPHEMERAL_SETTING.Enum(),
			EphemeralExpiration: proto.Uint32(seconds),
		}}
	}
	tests := []struct {
		name       string
		info       types.MessageInfo
		raw        *waE2E.Message
		senderName string
		text       string
		replyTo    string
	}{
		{"pin", infoGroup(aliceJID, "N1"), pin(waE2E.PinInChatMessage_PIN_FOR_ALL), "Alice", "Alice pinned a message", "3EB0PINNED"},
		{"unpin by someone unnamed", infoGroup(aliceJID, "N2"), pin(waE2E.PinInChatMessage_UNPIN_FOR_ALL), "", "+15550001111 unpinned a message", "3EB0PINNED"},
		{"unpin by a LID", infoGroup(aliceLID, "N3"), pin(waE2E.PinInChatMessage_UNPIN_FOR_ALL), "", "987654321012345 unpinned a message", "3EB0PINNED"},
		{"pin by nobody known", types.MessageInfo{MessageSource: types.MessageSource{Chat: aliceJID}, ID: "N7", Timestamp: convSentAt},
			pin(waE2E.PinInChatMessage_PIN_FOR_ALL), "", "Someone pinned a message", "3EB0PINNED"},
		{"disappearing on", infoDM(aliceJID, "N4"), timer(7 * 86400), "Alice", "Alice turned on disappearing messages (7 days)", ""},
		{"disappearing on, hours", infoDM(aliceJID, "N5"), timer(86400 / 2), "Alice", "Alice turned on disappearing messages (12 hours)", ""},
		{"disappearing off", infoDM(aliceJID, "N6"), timer(0), "Alice", "Alice turned off disappearing messages", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := neutralEvent(tt.info, tt.senderName)
			want.Notice, want.Text, want.ReplyTo = true, tt.text, tt.replyTo
			checkIncoming(t, dispatched(tt.info, tt.raw), tt.senderName, want, msgRef{})
		})
	}
}

func TestConvertIncomingLocation(t *testing.T) {
	tests := []struct {
		name     string
		msg      *waE2E.Message
		location *bridge.Location
		text     string // the comment, or the words for a place off the Earth
		preview  string
	}{
		{
			name: "pin with name and address",
			msg: &waE2E.Message{LocationMessage: &waE2E.LocationMessage{
				DegreesLatitude: proto.Float64(52.5163), DegreesLongitude: proto.Float64(13.3777),
				Name: proto.String("Brandenburger Tor"), Address: proto.String("Pariser Platz, Berlin"),
			}},
			location: &bridge.Location{Latitude: 52.5163, Longitude: 13.3777, Name: "Brandenburger Tor", Address: "Pariser Platz, Berlin"},
			preview:  "📍 Location: Brandenburger Tor",
		},
		{
			name: "bare coordinates, southern and western",
			msg: &waE2E.Message{LocationMessage: &waE2E.LocationMessage{
				DegreesLatitude: proto.Float64(-34.6037), DegreesLongitude: proto.Float64(-58.3816),
			}},
			location: &bridge.Location{Latitude: -34.6037, Longitude: -58.3816},
			preview:  "📍 Location",
		},
		{
			name: "location with comment",
			msg: &waE2E.Message{LocationMessage: &waE2E.LocationMessage{
				DegreesLatitude: proto.Float64(1), DegreesLongitude: proto.Float64(2), Comment: proto.String("  here!  "),
			}},
			location: &bridge.Location{Latitude: 1, Longitude: 2},
			text:     "here!",
			preview:  "📍 Location",
		},
		{
			name: "live location flag",
			msg: &waE2E.Message{LocationMessage: &waE2E.LocationMessage{
				DegreesLatitude: proto.Float64(48.8584), DegreesLongitude: proto.Float64(2.2945), IsLive: proto.Bool(true),
			}},
			location: &bridge.Location{Latitude: 48.8584, Longitude: 2.2945, Live: true},
			preview:  "📍 Live location",
		},
		{
			name: "live location message",
			msg: &waE2E.Message{LiveLocationMessage: &waE2E.LiveLocationMessage{
				DegreesLatitude: proto.Float64(51.5007), DegreesLongitude: proto.Float64(-0.1246),
				Caption: proto.String("on my way"), SequenceNumber: proto.Int64(1),
			}},
			location: &bridge.Location{Latitude: 51.5007, Longitude: -0.1246, Live: true},
			text:     "on my way",
			preview:  "📍 Live location",
		},
		{
			name: "a place off the Earth is said in words",
			msg: &waE2E.Message{LocationMessage: &waE2E.LocationMessage{
				DegreesLatitude: proto.Float64(95), DegreesLongitude: proto.Float64(2), Name: proto.String("Nowhere"),
			}},
			text:    "📍 Location: Nowhere",
			preview: "📍 Location: Nowhere",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := infoDM(aliceJID, "LOC")
			want := neutralEvent(info, "Alice")
			want.Text, want.Location = tt.text, tt.location
			checkIncoming(t, dispatched(info, tt.msg), "Alice", want, msgRefOf(info, tt.preview))
			got, _ := convertIncoming(dispatched(info, tt.msg), "Alice")
			if err := got.Event.Check(); err != nil {
				t.Errorf("the core would refuse it: %v", err)
			}
		})
	}
}

func TestConvertIncomingPoll(t *testing.T) {
	poll := &waE2E.PollCreationMessage{
		Name: proto.String("Lunch?"),
		Options: []*waE2E.PollCreationMessage_Option{
			{OptionName: proto.String("Pizza")}, {OptionName: proto.String("")}, {OptionName: proto.String("Sushi ")},
		},
		SelectableOptionsCount: proto.Uint32(1),
		EncKey:                 []byte("0123456789abcdef0123456789abcdef"),
	}
	for name, msg := range map[string]*waE2E.Message{
		"v1": {PollCreationMessage: poll},
		"v2": {PollCreationMessageV2: poll},
		"v3": {PollCreationMessageV3: poll},
		"v5": {PollCreationMessageV5: poll},
	} {
		t.Run(name, func(t *testing.T) {
			info := infoGroup(aliceJID, "POLL"+name)
			want := neutralEvent(info, "Alice")
			// An empty option is no option. The options are remembered
			// as WhatsApp has them, since votes name them by hash.
			want.Poll = &bridge.Poll{Question: "Lunch?", Options: []string{"Pizza", "Sushi"}, Choices: 1}
			ref := msgRefOf(info, "📊 Lunch?")
			ref.Options = []string{"Pizza", "Sushi "}
			checkIncoming(t, dispatched(info, msg), "Alice", want, ref)
		})
	}
	// A poll the core would refuse is said in words.
	lone := &waE2E.Message{PollCreationMessage: &waE2E.PollCreationMessage{Name: proto.String("Just me?"),
		Options: []*waE2E.PollCreationMessage_Option{{OptionName: proto.String("yes")}}}}
	info := infoGroup(aliceJID, "POLLONE")
	want := neutralEvent(info, "Alice")
	want.Text = "📊 Just me?\n1. yes"
	checkIncoming(t, dispatched(info, lone), "Alice", want, msgRefOf(info, "📊 Just me?"))
}

// TestConvertIncomingReplyOnEveryKind: every content message that quotes
// another names it in ReplyTo.
func TestConvertIncomingReplyOnEveryKind(t *testing.T) {
	ctx := &waE2E.ContextInfo{StanzaID: proto.String("3EB0Q"), Participant: proto.String(bobJID.String())}
	key := []byte("key")
	for name, msg := range map[string]*waE2E.Message{
		"text":     {ExtendedTextMessage: &waE2E.ExtendedTextMessage{Text: proto.String("t"), ContextInfo: ctx}},
		"image":    {ImageMessage: &waE2E.ImageMessage{DirectPath: proto.String("/p"), MediaKey: key, ContextInfo: ctx}},
		"video":    {VideoMessage: &waE2E.VideoMessage{DirectPath: proto.String("/p"), MediaKey: key, ContextInfo: ctx}},
		"ptv":      {PtvMessage: &waE2E.VideoMessage{DirectPath: proto.String("/p"), MediaKey: key, ContextInfo: ctx}},
		"audio":    {AudioMessage: &waE2E.AudioMessage{DirectPath: proto.String("/p"), MediaKey: key, ContextInfo: ctx}},
		"document": {DocumentMessage: &waE2E.DocumentMessage{DirectPath: proto.String("/p"), MediaKey: key, ContextInfo: ctx}},
		"sticker":  {StickerMessage: &waE2E.StickerMessage{DirectPath: proto.String("/p"), MediaKey: key, ContextInfo: ctx}},
		"location": {LocationMessage: &waE2E.LocationMessage{ContextInfo: ctx}},
		"live":     {LiveLocationMessage: &waE2E.LiveLocationMessage{ContextInfo: ctx}},
		"contact":  {ContactMessage: &waE2E.ContactMessage{DisplayName: proto.String("C"), ContextInfo: ctx}},
		"contacts": {ContactsArrayMessage: &waE2E.ContactsArrayMessage{ContextInfo: ctx}},
		"poll":     {PollCreationMessageV3: &waE2E.PollCreationMessage{Name: proto.String("?"), ContextInfo: ctx}},
	} {
		got, ok := convertIncoming(dispatched(infoGroup(aliceJID, "RE"), msg), "")
		if !ok || got.Event.ReplyTo != "3EB0Q" {
			t.Errorf("%s: ok %v, ReplyTo %q; want a reply to 3EB0Q", name, ok, got.Event.ReplyTo)
		}
	}
}

// TestConvertIncomingUnsupported: a visible message the converter does
// not know becomes a placeholder naming it, not silence.
func TestConvertIncomingUnsupported(t *testing.T) {
	tests := []struct {
		name string
		msg  *waE2E.Message
		text string
	}{
		{"group invite", &waE2E.Message{GroupInviteMessage: &waE2E.GroupInviteMessage{GroupName: proto.String("Club")}}, "[unsupported message: group invite]"},
		{"event", &waE2E.Message{EventMessage: &waE2E.EventMessage{Name: proto.String("Party")}}, "[unsupported message: event]"},
		{"call log (sic)", &waE2E.Message{CallLogMesssage: &waE2E.CallLogMessage{}}, "[unsupported message: call log]"},
		{"placeholder", &waE2E.Message{PlaceholderMessage: &waE2E.PlaceholderMessage{
			Type: waE2E.PlaceholderMessage_MASK_LINKED_DEVICES.Enum()}}, "[this message can only be seen on the phone]"},
		{"unknown type in an envelope", &waE2E.Message{EphemeralMessage: &waE2E.FutureProofMessage{
			Message: &waE2E.Message{ProductMessage: &waE2E.ProductMessage{}}}}, "[unsupported message: product]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := infoDM(aliceJID, "U1")
			want := neutralEvent(info, "Alice")
			want.Text = tt.text
			checkIncoming(t, dispatched(info, tt.msg), "Alice", want, msgRefOf(info, tt.text))
		})
	}
}

// TestConvertIncomingSkipped: protocol traffic and messages with nothing
// to show are not relayed.
func TestConvertIncomingSkipped(t *testing.T) {
	protocol := func(typ waE2E.ProtocolMessage_Type) *waE2E.Message {
		return &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{Type: typ.Enum()}}
	}
	tests := []struct {
		name string
		info types.MessageInfo
		msg  *waE2E.Message
	}{
		{"empty message", infoDM(aliceJID, "S"), &waE2E.Message{}},
		{"empty conversation", infoDM(aliceJID, "S"), &waE2E.Message{Conversation: proto.String("")}},
		{"extended text without text", infoDM(aliceJID, "S"), &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{
			ContextInfo: &waE2E.ContextInfo{StanzaID: proto.String("Q")}}}},
		{"empty envelope", infoDM(aliceJID, "S"), &waE2E.Message{EphemeralMessage: &waE2E.FutureProofMessage{}}},
		{"history sync notification", infoOwner(ownerJID, "S"), &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{
			Type:                    waE2E.ProtocolMessage_HISTORY_SYNC_NOTIFICATION.Enum(),
			HistorySyncNotification: &waE2E.HistorySyncNotification{FileLength: proto.Uint64(10)},
		}}},
		{"app state key share", infoOwner(ownerJID, "S"), protocol(waE2E.ProtocolMessage_APP_STATE_SYNC_KEY_SHARE)},
		{"app state key request", infoOwner(ownerJID, "S"), protocol(waE2E.ProtocolMessage_APP_STATE_SYNC_KEY_REQUEST)},
		{"peer data operation", infoOwner(ownerJID, "S"), protocol(waE2E.ProtocolMessage_PEER_DATA_OPERATION_REQUEST_RESPONSE_MESSAGE)},
		{"disappearing setting in a group", infoGroup(aliceJID, "S"), &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{
			Type: waE2E.ProtocolMessage_EPHEMERAL_SETTING.Enum(), EphemeralExpiration: proto.Uint32(86400)}}},
		{"revoke without target", infoDM(aliceJID, "S"), protocol(waE2E.ProtocolMessage_REVOKE)},
		{"edit without target", infoDM(aliceJID, "S"), &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{
			Type: waE2E.ProtocolMessage_MESSAGE_EDIT.Enum(), EditedMessage: &waE2E.Message{Conversation: proto.String("x")}}}},
		{"edit without text", infoDM(aliceJID, "S"), editProto(aliceJID, "3EB0ORIG", nil)},
		{"edit to empty text", infoDM(aliceJID, "S"), editProto(aliceJID, "3EB0ORIG", &waE2E.Message{Conversation: proto.String("")})},
		{"reaction without target", infoDM(aliceJID, "S"), &waE2E.Message{ReactionMessage: &waE2E.ReactionMessage{Text: proto.String("👍")}}},
		{"pin of unknown type", infoDM(aliceJID, "S"), &waE2E.Message{PinInChatMessage: &waE2E.PinInChatMessage{
			Key: &waCommon.MessageKey{ID: proto.String("P")}}}},
		{"sender key distribution", infoGroup(aliceJID, "S"), &waE2E.Message{
			SenderKeyDistributionMessage: &waE2E.SenderKeyDistributionMessage{GroupID: proto.String(groupJID.String())},
			MessageContextInfo:           &waE2E.MessageContextInfo{},
		}},
		// Votes and encrypted reactions need decrypting first.
		{"poll vote", infoGroup(aliceJID, "S"), &waE2E.Message{PollUpdateMessage: &waE2E.PollUpdateMessage{
			PollCreationMessageKey: &waCommon.MessageKey{ID: proto.String("POLL")}}}},
		{"encrypted reaction", infoGroup(aliceJID, "S"), &waE2E.Message{EncReactionMessage: &waE2E.EncReactionMessage{}}},
		{"keep in chat", infoDM(aliceJID, "S"), &waE2E.Message{KeepInChatMessage: &waE2E.KeepInChatMessage{}}},
		{"album header", infoDM(aliceJID, "S"), &waE2E.Message{AlbumMessage: &waE2E.AlbumMessage{ExpectedImageCount: proto.Uint32(3)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, ok := convertIncoming(dispatched(tt.info, tt.msg), "Alice"); ok {
				t.Errorf("relayed as %+v; want it skipped", got.Event)
			}
		})
	}
	t.Run("nil event", func(t *testing.T) {
		if _, ok := convertIncoming(nil, ""); ok {
			t.Error("a nil event was relayed")
		}
	})
	t.Run("no message at all", func(t *testing.T) {
		if _, ok := convertIncoming(&events.Message{Info: infoDM(aliceJID, "S")}, ""); ok {
			t.Error("an event without a message was relayed")
		}
	})
}

func TestDurationText(t *testing.T) {
	for seconds, want := range map[uint32]string{
		1: "1 second", 59: "59 seconds", 60: "1 minute", 90: "90 seconds", 3600: "1 hour",
		7200: "2 hours", 86400: "1 day", 7 * 86400: "7 days", 90 * 86400: "90 days", 86400 + 3600: "25 hours",
	} {
		if got := durationText(seconds); got != want {
			t.Errorf("durationText(%d) = %q; want %q", seconds, got, want)
		}
	}
}

func TestTypeWords(t *testing.T) {
	for field, want := range map[string]string{
		"groupInviteMessage":           "group invite",
		"callLogMesssage":              "call log",
		"highlyStructuredMessage":      "highly structured",
		"newsletterAdminInviteMessage": "newsletter admin invite",
		"call":                         "call",
		"Message":                      "message",
	} {
		if got := typeWords(field); got != want {
			t.Errorf("typeWords(%q) = %q; want %q", field, got, want)
		}
	}
}

func TestJIDLabel(t *testing.T) {
	for _, tt := range []struct {
		jid  types.JID
		want string
	}{
		{aliceJID, "+15550001111"},
		{onDevice(aliceJID, 3), "+15550001111"},
		{aliceLID, "987654321012345"},
		{types.EmptyJID, "Someone"},
	} {
		if got := jidLabel(tt.jid); got != tt.want {
			t.Errorf("jidLabel(%v) = %q; want %q", tt.jid, got, tt.want)
		}
	}
}
