package whatsapp

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"

	"github.com/phonebridge/phonebridge/bridge"
)

// Send implements bridge.Connector.
func (c *Connector) Send(ctx context.Context, out *bridge.Outgoing) (string, error) {
	// A bad chat id fails for good even while disconnected, rather than
	// waiting in the outbox for a connection that cannot fix it.
	chat, err := types.ParseJID(out.Chat.ID)
	if err != nil || chat.User == "" {
		return "", bridge.Permanentf("%q is not a WhatsApp chat id", out.Chat.ID)
	}
	cli, dev := c.current()
	if cli == nil || dev == nil || dev.ID == nil {
		st := c.LinkStatus()
		return "", fmt.Errorf("WhatsApp link %q is not connected (%s); the event waits", c.name, st.State)
	}
	chat = chat.ToNonAD()
	self := ownJID(dev)

	switch out.Kind {
	case bridge.KindTyping:
		state := types.ChatPresenceComposing
		if out.StoppedTyping {
			state = types.ChatPresencePaused
		}
		return "", cli.SendChatPresence(ctx, chat, state, types.ChatPresenceMediaText)
	case bridge.KindRead:
		target, err := c.lookup(ctx, chat, out.Target)
		if err != nil || target == nil {
			return "", err
		}
		return "", cli.MarkRead(ctx, []types.MessageID{target.ID}, time.Now(), chat, target.Sender)
	case bridge.KindMessage:
		return c.sendMessage(ctx, cli, chat, self, out)
	}

	// Edits, deletes, reactions and votes act on a message the link knows.
	target, err := c.lookup(ctx, chat, out.Target)
	if err != nil {
		return "", err
	}
	if target == nil {
		return "", bridge.Permanentf("WhatsApp message %s in %s is not known to link %q", out.Target, chat, c.name)
	}
	var msg *waE2E.Message
	switch out.Kind {
	case bridge.KindEdit:
		if out.Location != nil {
			// A live location that moved elsewhere: WhatsApp lets a linked
			// device neither share a live location nor move one, so the
			// place sent stays where it was.
			return "", nil
		}
		if !target.FromMe {
			return "", bridge.Permanentf("WhatsApp lets only the author edit a message")
		}
		text, markup := c.body(out)
		if time.Since(target.At) > editWindow {
			return c.sendCorrection(ctx, cli, chat, self, out, target, text, markup)
		}
		msg = editMessage(chat, target.ID, textMessage(text, markup, nil))
	case bridge.KindDelete:
		msg = revokeMessage(chat, *target, self)
	case bridge.KindReaction:
		msg = reactionMessage(chat, *target, self, out.Emoji, time.Now())
	case bridge.KindReactionRemove:
		msg = reactionMessage(chat, *target, self, "", time.Now())
	case bridge.KindVote:
		return c.sendVote(ctx, cli, chat, self, out, target) // votes.go
	default:
		return "", bridge.Permanentf("WhatsApp cannot take a %s event", out.Kind)
	}
	id := messageID(out.Key, 0)
	if _, err := cli.SendMessage(ctx, chat, msg, whatsmeow.SendRequestExtra{ID: id}); err != nil {
		return "", classify(err)
	}
	if out.Kind == bridge.KindEdit {
		c.rememberNow(ctx, msgRef{Chat: chat, ID: target.ID, Sender: self, FromMe: true, Text: out.Text})
	}
	return id, nil
}

// editWindow is how long after sending WhatsApp's apps take an edit: a
// later one is accepted by the server but ignored by every phone.
const editWindow = 15 * time.Minute

// sendCorrection sends an edit WhatsApp would ignore as the corrected
// copy, answering the message it corrects, as the core does for
// destinations without edits.
func (c *Connector) sendCorrection(ctx context.Context, cli waClient, chat, self types.JID, out *bridge.Outgoing, target *msgRef, text, markup string) (string, error) {
	if markup != "" {
		markup = "✎ " + markup
	}
	id := messageID(out.Key, 0)
	if _, err := cli.SendMessage(ctx, chat, textMessage("✎ "+text, markup, target), whatsmeow.SendRequestExtra{ID: id}); err != nil {
		return "", classify(err)
	}
	c.rememberNow(ctx, msgRef{Chat: chat, ID: id, Sender: self, FromMe: true, Text: out.Text})
	return id, nil
}

// sendMessage sends an event as one WhatsApp message per attachment, and
// the text on its own when no attachment carries it (see planMessage). It
// returns the first message's id.
func (c *Connector) sendMessage(ctx context.Context, cli waClient, chat, self types.JID, out *bridge.Outgoing) (string, error) {
	// Checked before the sender's name is added, which is not content.
	if out.Text == "" && len(out.Media) == 0 && out.Location == nil && out.Poll == nil {
		return "", bridge.Permanentf("nothing to send: the event has neither text, media, a location nor a poll")
	}
	quoted, err := c.lookup(ctx, chat, out.ReplyTo)
	if err != nil {
		return "", err
	}
	out, mentioned := waMentions(out, self)
	var msgs []*waE2E.Message
	var parts []outPart
	if out.Poll != nil {
		// The poll asks first, its question naming the sender; words and
		// attachments with it follow on their own.
		msgs = append(msgs, c.pollMessage(out, quoted))
		if out.Text != "" || len(out.Media) > 0 {
			rest := *out
			rest.Poll = nil
			parts = c.planMessage(&rest)
		}
	} else if out.Location != nil {
		// The place goes first with the words as its comment; attachments,
		// if any, follow on their own.
		msgs = append(msgs, locationMessage(*out.Location, c.locationComment(out), quoted))
		if len(out.Media) > 0 {
			rest := *out
			rest.Text, rest.HTML, rest.Location = "", "", nil
			parts = c.planMessage(&rest)
		}
	} else {
		parts = c.planMessage(out)
	}
	// Everything is uploaded before anything is sent: a failed upload
	// leaves the chat untouched for the retry.
	placed := len(msgs)
	msgs = append(msgs, make([]*waE2E.Message, len(parts))...)
	for j, p := range parts {
		i := placed + j
		q := quoted
		if i > 0 {
			q = nil // the reply context goes on the first message
		}
		if p.media == nil {
			msgs[i] = textMessage(p.text, p.html, q)
			continue
		}
		data, err := c.readMedia(ctx, *p.media)
		if err != nil {
			return "", err
		}
		up, err := cli.Upload(ctx, data, p.mediaType)
		if err != nil {
			return "", fmt.Errorf("upload %s to WhatsApp: %w", p.media.Name, err)
		}
		msgs[i] = mediaMessage(p.kind, up, *p.media, waBody(p.text, p.html), q)
	}
	if len(mentioned) > 0 {
		for _, msg := range msgs {
			withMentions(msg, mentioned)
		}
	}
	// In a disappearing chat what the link sends disappears with the rest.
	timer, err := c.timer(ctx, chat)
	if err != nil {
		return "", err
	}
	var expires time.Time
	if timer > 0 {
		for _, msg := range msgs {
			withExpiration(msg, timer)
		}
		expires = time.Now().Add(time.Duration(timer) * time.Second)
	}
	var first string
	for i, msg := range msgs {
		id := messageID(out.Key, i)
		if _, err := cli.SendMessage(ctx, chat, msg, whatsmeow.SendRequestExtra{ID: id}); err != nil {
			return "", classify(err)
		}
		if i == 0 {
			first = id
			ref := msgRef{Chat: chat, ID: id, Sender: self, FromMe: true, Text: preview(out), Expires: expires}
			if out.Poll != nil {
				ref.Options = out.Poll.Options // the poll goes first; votes name these
			}
			c.rememberNow(ctx, ref)
		}
	}
	return first, nil
}

// waMentions writes out's mentions as WhatsApp has them: "@" and the
// person's number in the text, their JIDs beside it. A mention of someone
// who is not a WhatsApp user stays the words it was.
func waMentions(out *bridge.Outgoing, self types.JID) (*bridge.Outgoing, []string) {
	if len(out.Mentions) == 0 {
		return out, nil
	}
	o := *out
	var jids []string
	for _, m := range out.Mentions {
		j := self
		if !m.Owner {
			parsed, err := types.ParseJID(m.ID)
			if err != nil || parsed.User == "" || (parsed.Server != types.DefaultUserServer && parsed.Server != types.HiddenUserServer) {
				continue
			}
			j = parsed.ToNonAD()
		}
		if m.Text == "" || !strings.Contains(o.Text, m.Text) || slices.Contains(jids, j.String()) {
			continue
		}
		at := "@" + j.User
		o.Text = strings.Replace(o.Text, m.Text, at, 1)
		if o.HTML != "" {
			o.HTML = strings.Replace(o.HTML, html.EscapeString(m.Text), at, 1)
		}
		jids = append(jids, j.String())
	}
	return &o, jids
}

// pollMessage asks out's poll, as whatsmeow's BuildPollCreation does:
// with a message secret, which votes are encrypted with.
func (c *Connector) pollMessage(out *bridge.Outgoing, quoted *msgRef) *waE2E.Message {
	q := *out
	q.Text, q.HTML, q.Emote = out.Poll.Question, "", false
	question, _ := c.body(&q)
	options := make([]*waE2E.PollCreationMessage_Option, len(out.Poll.Options))
	for i, o := range out.Poll.Options {
		options[i] = &waE2E.PollCreationMessage_Option{OptionName: proto.String(o)}
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		panic("whatsapp: crypto/rand failed: " + err.Error())
	}
	return &waE2E.Message{
		PollCreationMessage: &waE2E.PollCreationMessage{
			Name: proto.String(question), Options: options,
			SelectableOptionsCount: proto.Uint32(uint32(out.Poll.Choices)), ContextInfo: replyContext(quoted),
		},
		MessageContextInfo: &waE2E.MessageContextInfo{MessageSecret: secret},
	}
}

// locationComment is what a place says under it: the event's words with
// the sender's name, or the name alone.
func (c *Connector) locationComment(out *bridge.Outgoing) string {
	text, markup := c.body(out)
	comment := waBody(text, markup)
	if out.Text == "" {
		comment = strings.TrimRight(comment, ": ")
	}
	return comment
}

// outPart is one WhatsApp message of an outgoing event: a text, or an
// attachment with its caption (text and html).
type outPart struct {
	media      *bridge.Media // nil for a text
	kind       string
	mediaType  whatsmeow.MediaType
	text, html string
	// eventText: the words are the event's text, not an attachment's own
	// caption, so an emote shows as one.
	eventText bool
}

// captionable reports whether the part can carry words: a text, or an
// attachment other than audio and stickers.
func (p outPart) captionable() bool {
	return p.media == nil || (p.kind != mediaAudio && p.kind != mediaSticker)
}

// preview is what a reply to the event's first message quotes.
func preview(out *bridge.Outgoing) string {
	if out.Text != "" {
		return out.Text
	}
	for _, m := range out.Media {
		if m.Caption != "" {
			return m.Caption
		}
	}
	if l := out.Location; l != nil {
		return strings.TrimSpace("📍 " + l.Name)
	}
	return ""
}

// planMessage lays an event out as WhatsApp messages, in the order a
// reader expects:
//   - the event's text comes first: as the first attachment's caption when
//     that one can carry it and has no caption of its own, else on its own;
//   - each attachment carries its own caption; audio and stickers cannot,
//     so theirs follows them as a text;
//   - the sender's name goes on the first message, as the text would get
//     it (an attachment without words gets the name alone as its caption);
//     when that is an audio or sticker, on its caption right after it, or
//     on a line of its own before it.
func (c *Connector) planMessage(out *bridge.Outgoing) []outPart {
	var parts []outPart
	text := outPart{text: out.Text, html: out.HTML, eventText: true}
	for i := range out.Media {
		m := &out.Media[i]
		kind, mediaType := mediaKind(*m)
		p := outPart{media: m, kind: kind, mediaType: mediaType, text: m.Caption}
		if p.text == out.Text {
			// WhatsApp's and Matrix's attachments come with their caption
			// as the event's text too: it is one caption, sent once.
			p.text = ""
		}
		if i == 0 && text.text != "" && p.captionable() && p.text == "" {
			p.text, p.html, p.eventText = text.text, text.html, true
			text.text = ""
		}
		parts = append(parts, p)
		if !p.captionable() && p.text != "" {
			parts[len(parts)-1].text = ""
			parts = append(parts, outPart{text: p.text})
		}
	}
	if text.text != "" {
		parts = append([]outPart{text}, parts...)
	}

	named := 0 // the part that names the sender
	if !parts[0].captionable() {
		if len(parts) > 1 && parts[1].media == nil {
			named = 1
		} else {
			parts = append([]outPart{{}}, parts...)
		}
	}
	p := &parts[named]
	o := *out
	o.Text, o.HTML, o.Emote = p.text, p.html, out.Emote && p.eventText
	p.text, p.html = c.body(&o)
	if named == 0 && p.media == nil && p.text == "" {
		parts = parts[1:] // the owner's or a notice's audio: nothing to name
	}
	return parts
}

// body is the text to send and its formatted form: relayed messages go out
// as the account owner, so they carry the sender's name.
func (c *Connector) body(out *bridge.Outgoing) (text, markup string) {
	text, markup = out.Text, out.HTML
	name := out.Sender.Name
	if name == "" {
		name = out.Sender.ID
	}
	switch {
	case out.Sender.IsOwner || out.Notice || name == "":
	case out.Emote:
		text = "* " + name + " " + text
		if markup != "" {
			markup = "* " + html.EscapeString(name) + " " + markup
		}
	default:
		prefix := strings.ReplaceAll(c.opts.SenderFormat, "{name}", name)
		text = prefix + text
		if markup != "" {
			markup = html.EscapeString(prefix) + markup
		}
	}
	return text, markup
}

// readMedia reads an attachment, refusing what is over the limit.
func (c *Connector) readMedia(ctx context.Context, m bridge.Media) ([]byte, error) {
	if m.Open == nil {
		return nil, bridge.Permanentf("attachment %q cannot be opened", m.Name)
	}
	rc, err := m.Open(ctx)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, c.opts.MaxMediaBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > c.opts.MaxMediaBytes {
		return nil, bridge.Permanentf("attachment %q is over max_media_bytes (%d)", m.Name, c.opts.MaxMediaBytes)
	}
	return data, nil
}

// OpenMedia implements bridge.MediaOpener: it downloads an attachment of a
// WhatsApp message again from what the message said about it, or a
// profile picture a description named.
func (c *Connector) OpenMedia(ctx context.Context, m bridge.Media) (io.ReadCloser, error) {
	if strings.HasPrefix(m.Ref, avatarRefPrefix) {
		return c.openAvatar(ctx, m)
	}
	ref, err := decodeMediaRef(m.Ref)
	if err != nil {
		return nil, bridge.Permanentf("attachment reference is damaged: %v", err)
	}
	cli, _ := c.current()
	if cli == nil {
		return nil, fmt.Errorf("WhatsApp link %q is not connected; the attachment waits", c.name)
	}
	data, err := cli.DownloadMediaWithPath(ctx, ref.DirectPath, ref.FileEncSHA256, ref.FileSHA256, ref.MediaKey, int(ref.FileLength), ref.mediaType(), "")
	if err != nil {
		if errors.Is(err, whatsmeow.ErrMediaDownloadFailedWith404) || errors.Is(err, whatsmeow.ErrMediaDownloadFailedWith410) {
			return nil, bridge.Permanentf("WhatsApp no longer has attachment %q: %v", m.Name, err)
		}
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

// messageID derives the WhatsApp message id for a delivery from its key,
// in whatsmeow's own format: resending after a crash reuses the id, so
// the recipient's devices see one message, not two.
func messageID(key string, part int) types.MessageID {
	sum := sha256.Sum256([]byte("phonebridge:" + key + ":" + strconv.Itoa(part)))
	return whatsmeow.WebMessageIDPrefix + strings.ToUpper(hex.EncodeToString(sum[:9]))
}

// classify marks errors that retrying cannot fix.
func classify(err error) error {
	for _, permanent := range []error{
		whatsmeow.ErrNotInGroup, whatsmeow.ErrGroupNotFound, whatsmeow.ErrUnknownServer,
		whatsmeow.ErrRecipientADJID, whatsmeow.ErrBroadcastListUnsupported,
	} {
		if errors.Is(err, permanent) {
			return bridge.Permanent(err)
		}
	}
	return err
}
