package whatsapp

import (
	"strings"
	"time"

	"go.mau.fi/whatsmeow/proto/waCommon"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"

	"github.com/phonebridge/phonebridge/bridge"
)

// Outbound builders. They make the same protos as whatsmeow's BuildEdit,
// BuildRevoke and BuildReaction, but from the JIDs they are given, so they
// need no live client.

// textMessage builds a text message: a plain Conversation, or an
// ExtendedTextMessage when it quotes quoted. The text is html turned into
// WhatsApp markup when html is set, else text as it is.
func textMessage(text, html string, quoted *msgRef) *waE2E.Message {
	body := waBody(text, html)
	ctx := replyContext(quoted)
	if ctx == nil {
		return &waE2E.Message{Conversation: proto.String(body)}
	}
	return &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{
		Text:        proto.String(body),
		ContextInfo: ctx,
	}}
}

// locationMessage shares a place. A live location goes as the place it
// was when sent: WhatsApp takes live updates only from the phone that
// shares them.
func locationMessage(l bridge.Location, comment string, quoted *msgRef) *waE2E.Message {
	opt := func(s string) *string {
		if s = strings.TrimSpace(s); s == "" {
			return nil
		}
		return proto.String(s)
	}
	return &waE2E.Message{LocationMessage: &waE2E.LocationMessage{
		DegreesLatitude: proto.Float64(l.Latitude), DegreesLongitude: proto.Float64(l.Longitude),
		Name: opt(l.Name), Address: opt(l.Address), Comment: opt(comment), ContextInfo: replyContext(quoted),
	}}
}

// withExpiration marks msg as sent into a chat whose messages disappear
// after seconds, as WhatsApp's apps mark theirs.
func withExpiration(msg *waE2E.Message, seconds uint32) {
	if ci := makeContext(msg); ci != nil {
		ci.Expiration = proto.Uint32(seconds)
	}
}

// withMentions names the people msg's text @-mentions by their numbers.
func withMentions(msg *waE2E.Message, jids []string) {
	if ci := makeContext(msg); ci != nil {
		ci.MentionedJID = jids
	}
}

// makeContext is the context of msg's content, made where it has none (a
// plain text becomes an extended one, which has a context); nil for
// content without one.
func makeContext(msg *waE2E.Message) *waE2E.ContextInfo {
	if msg.Conversation != nil {
		msg.ExtendedTextMessage = &waE2E.ExtendedTextMessage{Text: msg.Conversation}
		msg.Conversation = nil
	}
	var ci **waE2E.ContextInfo
	switch {
	case msg.ExtendedTextMessage != nil:
		ci = &msg.ExtendedTextMessage.ContextInfo
	case msg.ImageMessage != nil:
		ci = &msg.ImageMessage.ContextInfo
	case msg.VideoMessage != nil:
		ci = &msg.VideoMessage.ContextInfo
	case msg.AudioMessage != nil:
		ci = &msg.AudioMessage.ContextInfo
	case msg.DocumentMessage != nil:
		ci = &msg.DocumentMessage.ContextInfo
	case msg.StickerMessage != nil:
		ci = &msg.StickerMessage.ContextInfo
	case msg.LocationMessage != nil:
		ci = &msg.LocationMessage.ContextInfo
	case msg.PollCreationMessage != nil:
		ci = &msg.PollCreationMessage.ContextInfo
	default:
		return nil
	}
	if *ci == nil {
		*ci = &waE2E.ContextInfo{}
	}
	return *ci
}

// waBody is html turned into WhatsApp markup when html is set, else text
// as it is: a text's body or an attachment's caption.
func waBody(text, html string) string {
	if html != "" {
		if md := htmlToWA(html); md != "" {
			return md
		}
	}
	return text
}

// replyContext is the context that makes a message a reply to quoted: the
// quoted id, its sender, and its text so the phone can show the preview.
// nil when quoted is nil or has no id.
func replyContext(quoted *msgRef) *waE2E.ContextInfo {
	if quoted == nil || quoted.ID == "" {
		return nil
	}
	ctx := &waE2E.ContextInfo{
		StanzaID:      proto.String(quoted.ID),
		QuotedMessage: &waE2E.Message{Conversation: proto.String(quoted.Text)},
	}
	if !quoted.Sender.IsEmpty() {
		ctx.Participant = proto.String(quoted.Sender.ToNonAD().String())
	}
	return ctx
}

// editNow is the clock for edit timestamps; tests replace it.
var editNow = time.Now

// editMessage replaces the content of the account's own message target in
// chat with newContent (only the author can edit).
func editMessage(chat types.JID, target types.MessageID, newContent *waE2E.Message) *waE2E.Message {
	return &waE2E.Message{
		EditedMessage: &waE2E.FutureProofMessage{
			Message: &waE2E.Message{
				ProtocolMessage: &waE2E.ProtocolMessage{
					Key: &waCommon.MessageKey{
						RemoteJID: proto.String(chat.ToNonAD().String()),
						FromMe:    proto.Bool(true),
						ID:        proto.String(target),
					},
					Type:          waE2E.ProtocolMessage_MESSAGE_EDIT.Enum(),
					EditedMessage: newContent,
					TimestampMS:   proto.Int64(editNow().UnixMilli()),
				},
			},
		},
	}
}

// revokeMessage deletes target for everyone: the account's own message, or,
// as a group admin, someone else's (the key then names its sender).
func revokeMessage(chat types.JID, target msgRef, self types.JID) *waE2E.Message {
	return &waE2E.Message{
		ProtocolMessage: &waE2E.ProtocolMessage{
			Type: waE2E.ProtocolMessage_REVOKE.Enum(),
			Key:  messageKey(chat, target, self),
		},
	}
}

// reactionMessage reacts to target with emoji; "" removes the reaction.
func reactionMessage(chat types.JID, target msgRef, self types.JID, emoji string, at time.Time) *waE2E.Message {
	return &waE2E.Message{
		ReactionMessage: &waE2E.ReactionMessage{
			Key:               messageKey(chat, target, self),
			Text:              proto.String(emoji),
			SenderTimestampMS: proto.Int64(at.UnixMilli()),
		},
	}
}

// messageKey names target in chat. A message is the account's own when
// remembered so, or when its sender is the account (self). Someone else's
// message in a group also names its sender, as Participant.
func messageKey(chat types.JID, target msgRef, self types.JID) *waCommon.MessageKey {
	sender := target.Sender.ToNonAD()
	fromMe := target.FromMe || sender.IsEmpty() || (!self.IsEmpty() && sender.User == self.User)
	key := &waCommon.MessageKey{
		RemoteJID: proto.String(chat.ToNonAD().String()),
		FromMe:    proto.Bool(fromMe),
		ID:        proto.String(target.ID),
	}
	if !fromMe {
		switch chat.Server {
		case types.DefaultUserServer, types.HiddenUserServer, types.MessengerServer:
			// In a direct chat the other side is the chat itself.
		default:
			key.Participant = proto.String(sender.String())
		}
	}
	return key
}
