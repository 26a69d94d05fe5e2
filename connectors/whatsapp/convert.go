package whatsapp

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/phonebridge/phonebridge/bridge"
)

// incoming is one WhatsApp event turned neutral, with what the connector
// must remember of it.
type incoming struct {
	// Event: Chat.ID is the chat's JID and ID the WhatsApp message id;
	// Sender.ID is the sender's JID (phone number or LID, no device), and
	// Sender.IsOwner says the account's owner sent it (from the phone or
	// another linked device).
	Event bridge.Event
	// Ref is what to remember for later replies, reactions and revokes;
	// zero for events that create no message (edits, deletes, reactions,
	// notices).
	Ref msgRef
	// Timer is the chat's disappearing-messages timer in seconds (0:
	// off) where the message says it; nil where it says nothing.
	Timer *uint32
}

// msgRef is what the connector keeps per message: enough to quote, reply
// to, react to or revoke it.
type msgRef struct {
	Chat   types.JID
	ID     types.MessageID
	Sender types.JID
	FromMe bool
	// Text is the plain text or caption (a short label for media without
	// one), for the quoted preview of replies.
	Text string
	// At is when the link first recorded it (sent or received it); zero
	// where unknown.
	At time.Time
	// Expires is when a disappearing chat's message disappears, and its
	// text with it; zero for never.
	Expires time.Time
	// Options are, for a poll, its option names exactly as WhatsApp has
	// them (votes name them by hash), one per option of the relayed poll.
	Options []string
}

// convertIncoming turns a whatsmeow message event into a neutral event.
// senderName is the display name to use (the caller resolves push names
// and contacts). ok is false for what is not relayed: protocol noise,
// history sync notifications, key distribution, poll votes (encrypted:
// the client decrypts them, votes.go), encrypted reactions, album
// headers. A user-visible type it does not know becomes a placeholder
// text ("[unsupported message: …]") rather than being dropped.
func convertIncoming(evt *events.Message, senderName string) (in incoming, ok bool) {
	if evt == nil {
		return incoming{}, false
	}
	msg := unwrapMessage(evt.Message)
	if msg == nil {
		msg = unwrapMessage(evt.RawMessage)
	}
	if msg == nil {
		return incoming{}, false
	}
	info := evt.Info
	chat, sender := info.Chat.ToNonAD(), info.Sender.ToNonAD()
	ev := bridge.Event{
		Kind:   bridge.KindMessage,
		Chat:   chatRef(chat),
		ID:     info.ID,
		Sender: bridge.Sender{ID: sender.String(), Name: senderName, IsOwner: info.IsFromMe},
		Time:   info.Timestamp,
	}
	if sender.IsEmpty() {
		ev.Sender.ID = ""
	}
	actor := senderName
	if actor == "" {
		actor = jidLabel(sender)
	}

	switch {
	case msg.ProtocolMessage != nil:
		return convertProtocol(ev, msg.ProtocolMessage, actor, info.IsGroup)
	case msg.ReactionMessage != nil:
		r := msg.ReactionMessage
		ev.Target = r.GetKey().GetID()
		if ev.Target == "" {
			return incoming{}, false
		}
		// One reaction per person: a new one replaces the sender's last.
		ev.Kind, ev.Emoji, ev.ReplacesReaction = bridge.KindReaction, r.GetText(), true
		if ev.Emoji == "" {
			// WhatsApp does not say which reaction is removed; the core
			// removes the sender's latest one on the target.
			ev.Kind, ev.ReplacesReaction = bridge.KindReactionRemove, false
		}
		return incoming{Event: ev}, true
	case msg.PinInChatMessage != nil:
		p := msg.PinInChatMessage
		ev.ReplyTo = p.GetKey().GetID()
		ev.Notice = true
		switch p.GetType() {
		case waE2E.PinInChatMessage_PIN_FOR_ALL:
			ev.Text = actor + " pinned a message"
		case waE2E.PinInChatMessage_UNPIN_FOR_ALL:
			ev.Text = actor + " unpinned a message"
		default:
			return incoming{}, false
		}
		return incoming{Event: ev}, true
	}

	c, ok := messageContent(msg)
	if !ok {
		return incoming{}, false
	}
	ev.Text, ev.HTML, ev.ReplyTo = c.text, c.html, c.replyTo
	if c.media != nil {
		ev.Media = []bridge.Media{*c.media}
	}
	ev.Location, ev.Poll = c.location, c.poll
	if ev.Text == "" && len(ev.Media) == 0 && ev.Location == nil && ev.Poll == nil {
		return incoming{}, false
	}
	ref := msgRef{Chat: chat, ID: info.ID, Sender: sender, FromMe: info.IsFromMe, Text: c.preview, Options: c.pollOptions}
	res := incoming{Event: ev, Ref: ref}
	if c.expiration > 0 {
		// Sent into a disappearing chat: it says the chat's timer too.
		res.Event.ExpiresInSec = int64(c.expiration)
		res.Ref.Expires = info.Timestamp.Add(time.Duration(c.expiration) * time.Second)
		res.Timer = &c.expiration
	}
	return res, true
}

// convertProtocol handles revokes, edits and disappearing-message settings;
// every other protocol message is the client's business.
func convertProtocol(ev bridge.Event, p *waE2E.ProtocolMessage, actor string, group bool) (incoming, bool) {
	switch p.GetType() {
	case waE2E.ProtocolMessage_REVOKE:
		ev.Kind, ev.Target = bridge.KindDelete, p.GetKey().GetID()
	case waE2E.ProtocolMessage_MESSAGE_EDIT:
		ev.Kind, ev.Target = bridge.KindEdit, p.GetKey().GetID()
		c, ok := messageContent(unwrapMessage(p.GetEditedMessage()))
		if !ok || c.text == "" {
			return incoming{}, false // an edit must carry the new text
		}
		ev.Text, ev.HTML = c.text, c.html
	case waE2E.ProtocolMessage_EPHEMERAL_SETTING:
		timer := p.GetEphemeralExpiration()
		if group {
			// Groups announce it through GroupInfo; the timer still holds.
			return incoming{Timer: &timer}, false
		}
		ev.Notice = true
		ev.Text = disappearingText(actor, timer)
		return incoming{Event: ev, Timer: &timer}, true
	default:
		return incoming{}, false
	}
	if ev.Target == "" {
		return incoming{}, false
	}
	return incoming{Event: ev}, true
}

// disappearingText describes a disappearing-messages setting.
func disappearingText(actor string, seconds uint32) string {
	if seconds == 0 {
		return actor + " turned off disappearing messages"
	}
	return actor + " turned on disappearing messages (" + durationText(seconds) + ")"
}

func durationText(seconds uint32) string {
	plural := func(n uint32, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return strconv.FormatUint(uint64(n), 10) + " " + unit + "s"
	}
	switch {
	case seconds%86400 == 0:
		return plural(seconds/86400, "day")
	case seconds%3600 == 0:
		return plural(seconds/3600, "hour")
	case seconds%60 == 0:
		return plural(seconds/60, "minute")
	}
	return plural(seconds, "second")
}

// unwrapMessage removes the envelopes a message may arrive in (sent from
// another own device, ephemeral, view-once, edited, document with caption,
// album child, …) down to the content. It does what UnwrapRaw does without
// changing the event, and also opens future-proof envelopes it does not
// know, since such an envelope only ever holds a message.
func unwrapMessage(m *waE2E.Message) *waE2E.Message {
	for depth := 0; m != nil && depth < 8; depth++ {
		if inner := m.GetDeviceSentMessage().GetMessage(); inner != nil {
			m = inner
			continue
		}
		inner := futureProofInner(m)
		if inner == nil {
			return m
		}
		m = inner
	}
	return m
}

var futureProofName = (&waE2E.FutureProofMessage{}).ProtoReflect().Descriptor().FullName()

// futureProofInner returns the message inside m's envelope, when m is only
// an envelope (plus context, key distribution or other side data): an
// envelope next to content (an event's cover image) is part of it.
func futureProofInner(m *waE2E.Message) *waE2E.Message {
	var inner *waE2E.Message
	other := false
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == futureProofName:
			if fp, ok := v.Message().Interface().(*waE2E.FutureProofMessage); ok && fp.GetMessage() != nil && inner == nil {
				inner = fp.GetMessage()
			}
		case !noiseFields[fd.Name()]:
			other = true
		}
		return true
	})
	if other {
		return nil
	}
	return inner
}

// content is what a content message says, neutrally.
type content struct {
	text, html string
	media      *bridge.Media
	location   *bridge.Location
	poll       *bridge.Poll
	// pollOptions are poll's option names untrimmed, as votes hash them.
	pollOptions []string
	expiration  uint32 // seconds, in a disappearing chat
	replyTo     string
	preview     string // for msgRef.Text
}

// withContext is every content message that can quote another.
type withContext interface {
	GetContextInfo() *waE2E.ContextInfo
}

// messageContent converts a content message: text, media, location,
// contacts, polls, or a placeholder for a visible type it does not know.
// ok is false for messages with nothing to show.
func messageContent(m *waE2E.Message) (c content, ok bool) {
	if m == nil {
		return content{}, false
	}
	var sub withContext
	switch {
	case m.Conversation != nil:
		c = formattedText(m.GetConversation())
	case m.ExtendedTextMessage != nil:
		c = formattedText(m.ExtendedTextMessage.GetText())
		sub = m.ExtendedTextMessage
	case m.ImageMessage != nil:
		c, sub = mediaContent(imageMedia(m.ImageMessage)), m.ImageMessage
	case m.VideoMessage != nil:
		c, sub = mediaContent(videoMedia(m.VideoMessage, false)), m.VideoMessage
	case m.PtvMessage != nil:
		c, sub = mediaContent(videoMedia(m.PtvMessage, true)), m.PtvMessage
	case m.AudioMessage != nil:
		c, sub = mediaContent(audioMedia(m.AudioMessage)), m.AudioMessage
	case m.DocumentMessage != nil:
		c, sub = mediaContent(documentMedia(m.DocumentMessage)), m.DocumentMessage
	case m.StickerMessage != nil:
		c, sub = mediaContent(stickerMedia(m.StickerMessage)), m.StickerMessage
	case m.LocationMessage != nil:
		l := m.LocationMessage
		c = locationContent(bridge.Location{Latitude: l.GetDegreesLatitude(), Longitude: l.GetDegreesLongitude(),
			Name: strings.TrimSpace(l.GetName()), Address: strings.TrimSpace(l.GetAddress()), Live: l.GetIsLive()}, l.GetComment())
		sub = l
	case m.LiveLocationMessage != nil:
		l := m.LiveLocationMessage
		c = locationContent(bridge.Location{Latitude: l.GetDegreesLatitude(), Longitude: l.GetDegreesLongitude(), Live: true}, l.GetCaption())
		sub = l
	case m.ContactMessage != nil:
		c.text, sub = contactText(m.ContactMessage), m.ContactMessage
	case m.ContactsArrayMessage != nil:
		c.text, sub = contactsText(m.ContactsArrayMessage), m.ContactsArrayMessage
	case m.PollCreationMessage != nil:
		c, sub = pollContent(m.PollCreationMessage), m.PollCreationMessage
	case m.PollCreationMessageV2 != nil:
		c, sub = pollContent(m.PollCreationMessageV2), m.PollCreationMessageV2
	case m.PollCreationMessageV3 != nil:
		c, sub = pollContent(m.PollCreationMessageV3), m.PollCreationMessageV3
	case m.PollCreationMessageV5 != nil:
		c, sub = pollContent(m.PollCreationMessageV5), m.PollCreationMessageV5
	default:
		name, visible := unknownType(m)
		if !visible {
			return content{}, false
		}
		c.text = "[unsupported message: " + name + "]"
		if m.PlaceholderMessage != nil {
			c.text = "[this message can only be seen on the phone]"
		}
	}
	if sub != nil {
		// A reply names the quoted message by its id (StanzaID); mentions
		// and forwards carry a context without one.
		c.replyTo = sub.GetContextInfo().GetStanzaID()
		c.expiration = sub.GetContextInfo().GetExpiration()
	}
	if c.preview == "" {
		c.preview = c.text
	}
	return c, c.text != "" || c.media != nil || c.location != nil || c.poll != nil
}

// pollContent is a poll as the neutral model asks it; a poll the core
// would refuse (no question, fewer than two options, an empty one) is
// said in words instead.
func pollContent(p *waE2E.PollCreationMessage) content {
	poll := &bridge.Poll{Question: strings.TrimSpace(p.GetName()), Choices: int(p.GetSelectableOptionsCount())}
	var raw []string
	for _, o := range p.GetOptions() {
		if name := strings.TrimSpace(o.GetOptionName()); name != "" {
			poll.Options = append(poll.Options, name)
			raw = append(raw, o.GetOptionName())
		}
	}
	if poll.Choices > len(poll.Options) {
		poll.Choices = 0
	}
	if poll.Check() != nil {
		return content{text: pollText(p), preview: "📊 " + poll.Question}
	}
	return content{poll: poll, pollOptions: raw, preview: "📊 " + poll.Question}
}

// locationContent is a shared place with its comment as the text. A
// place off the Earth (a phone's bad fix, a forged message) is said in
// words instead: destinations would refuse it.
func locationContent(l bridge.Location, comment string) content {
	c := formattedText(strings.TrimSpace(comment))
	title := "📍 Location"
	if l.Live {
		title = "📍 Live location"
	}
	if l.Name != "" {
		title += ": " + l.Name
	}
	c.preview = title
	if !l.Valid() {
		c.text, c.html = strings.TrimSpace(title+"\n"+c.text), ""
		return c
	}
	c.location = &l
	return c
}

// formattedText is a text with its WhatsApp markup rendered as HTML.
func formattedText(text string) content {
	c := content{text: text}
	if h, changed := waToHTML(text); changed {
		c.html = h
	}
	return c
}

// mediaContent is an attachment with its caption as the text.
func mediaContent(m bridge.Media, label string) content {
	c := formattedText(m.Caption)
	c.media = &m
	c.preview = m.Caption
	if c.preview == "" {
		c.preview = label
	}
	return c
}

// noiseFields are the Message fields that carry nothing to show: key
// distribution, context, votes, encrypted reactions and RSVPs (the
// connector decrypts those if it wants them), keep-in-chat, sticker sync,
// call signalling, history bundles and album headers (album items arrive
// as messages of their own).
var noiseFields = map[protoreflect.Name]bool{
	"senderKeyDistributionMessage":               true,
	"fastRatchetKeySenderKeyDistributionMessage": true,
	"messageContextInfo":                         true,
	"pollUpdateMessage":                          true,
	"encReactionMessage":                         true,
	"encEventResponseMessage":                    true,
	"keepInChatMessage":                          true,
	"stickerSyncRmrMessage":                      true,
	"call":                                       true,
	"messageHistoryBundle":                       true,
	"messageHistoryNotice":                       true,
	"albumMessage":                               true,
	"deviceSentMessage":                          true,
	"secretEncryptedMessage":                     true,
}

// unknownType names the first set field of m that is not noise, in words
// ("group invite" for groupInviteMessage); visible is false when there is none.
func unknownType(m *waE2E.Message) (name string, visible bool) {
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if noiseFields[fd.Name()] || (fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == futureProofName) {
			return true // an empty envelope shows nothing either
		}
		name, visible = typeWords(string(fd.Name())), true
		return false
	})
	return name, visible
}

// typeWords turns a field name like "groupInviteMessage" into "group invite".
func typeWords(field string) string {
	field = strings.TrimSuffix(field, "Message")
	field = strings.TrimSuffix(field, "Messsage") // callLogMesssage, sic
	var b strings.Builder
	for i, r := range field {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte(' ')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	if b.Len() == 0 {
		return "message"
	}
	return b.String()
}

// pollText shows a poll's question and numbered options.
func pollText(p *waE2E.PollCreationMessage) string {
	var b strings.Builder
	b.WriteString("📊 " + p.GetName())
	n := 0
	for _, o := range p.GetOptions() {
		if name := o.GetOptionName(); name != "" {
			n++
			fmt.Fprintf(&b, "\n%d. %s", n, name)
		}
	}
	return b.String()
}

// jidLabel shows a JID to people when no name is known: a phone number
// with its "+", or the bare user part of other JIDs.
func jidLabel(jid types.JID) string {
	switch {
	case jid.IsEmpty():
		return "Someone"
	case jid.Server == types.DefaultUserServer:
		return "+" + jid.User
	}
	return jid.User
}
