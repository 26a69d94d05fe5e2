package whatsapp

import (
	"context"
	"fmt"
	"strings"

	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
)

// Texts shown for what WhatsApp delivered unreadably.
const (
	waitingText  = "⏳ Waiting for this message: WhatsApp could not decrypt it yet. It takes this one's place when it comes; if it does not, open WhatsApp on your phone."
	viewOnceText = "👁 A view-once message: WhatsApp shows it only on the phone. Open it there."
)

// placeholderSuffix makes the id of what replaces a placeholder: the
// placeholder holds the WhatsApp id in the core's map.
const placeholderSuffix = "#decrypted"

// onUndecryptable shows a message whatsmeow could not decrypt, as
// WhatsApp's own "waiting for this message"; whatsmeow has asked the
// sender for it again, and when it comes it replaces the placeholder
// (relayMessage). A view-once message never comes to a linked device: a
// notice says so. What the sender asked to hide on failure (reactions,
// edits) is not shown.
func (c *Connector) onUndecryptable(e *events.UndecryptableMessage) bool {
	if e.DecryptFailMode == events.DecryptFailHide || (e.Info.Chat == types.StatusBroadcastJID && !c.opts.StatusBroadcasts) {
		return true
	}
	ctx, cancel := context.WithTimeout(c.runCtx(), acceptTimeout)
	defer cancel()
	m := c.canonical(ctx, &events.Message{Info: e.Info})
	info := m.Info
	chat, sender := info.Chat.ToNonAD(), info.Sender.ToNonAD()
	ev := bridge.Event{
		Kind:   bridge.KindMessage,
		Chat:   chatRef(chat),
		ID:     info.ID,
		Sender: bridge.Sender{ID: sender.String(), Name: c.chats.senderName(ctx, info.Sender, info.PushName, info.IsFromMe), IsOwner: info.IsFromMe},
		Time:   info.Timestamp,
		Text:   waitingText,
	}
	ev.Chat.Name = c.chats.chatName(ctx, chat)
	if e.UnavailableType == events.UnavailableTypeViewOnce {
		ev.Text = viewOnceText
		return c.submit(ctx, &ev)
	}
	if err := c.store.Write(ctx, func(tx *bridge.Tx) error {
		_, err := tx.Exec(`INSERT INTO whatsapp_placeholders (link, chat, id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, c.name, chat.String(), info.ID)
		return err
	}); err != nil {
		c.log.Error("could not note an undecryptable WhatsApp message", "link", c.name, "chat", chat.String(), "err", err)
		return false
	}
	return c.submit(ctx, &ev)
}

// replacePlaceholder turns ev, a message that came once decrypted, into
// what replaces its placeholder, if one was shown: an edit of it (so
// replies to the placeholder find the message), or, for media, which an
// edit cannot carry, a delete of it and ev under another id. It returns
// what to submit: ev itself when it replaces nothing.
func (c *Connector) replacePlaceholder(ctx context.Context, ev *bridge.Event) ([]*bridge.Event, error) {
	var n int
	err := c.store.QueryRowContext(ctx, `SELECT COUNT(*) FROM whatsapp_placeholders WHERE link = ? AND chat = ? AND id = ?`, c.name, ev.Chat.ID, ev.ID).Scan(&n)
	if err != nil {
		return nil, fmt.Errorf("look for a placeholder of %s: %w", ev.ID, err)
	}
	if n == 0 || ev.Kind != bridge.KindMessage {
		return []*bridge.Event{ev}, nil
	}
	id := ev.ID
	if len(ev.Media) == 0 {
		edit := *ev
		edit.Kind, edit.Target, edit.ID = bridge.KindEdit, id, id+placeholderSuffix
		return []*bridge.Event{&edit}, nil
	}
	gone := bridge.Event{Kind: bridge.KindDelete, Chat: ev.Chat, ID: id + "#placeholder-gone", Sender: ev.Sender, Time: ev.Time, Target: id}
	msg := *ev
	msg.ID = id + placeholderSuffix
	return []*bridge.Event{&gone, &msg}, nil
}

// placeholderReplaced forgets a placeholder once what replaced it is in.
func (c *Connector) placeholderReplaced(ctx context.Context, chat, id string) {
	if err := c.store.Write(ctx, func(tx *bridge.Tx) error {
		_, err := tx.Exec(`DELETE FROM whatsapp_placeholders WHERE link = ? AND chat = ? AND id = ?`, c.name, chat, id)
		return err
	}); err != nil {
		c.log.Warn("could not forget a replaced placeholder", "link", c.name, "chat", chat, "err", err)
	}
}

// onCall relays a call's start as a message in the caller's chat (the
// group's, for a group call): calls ring only on the phone, and the
// owner elsewhere would not know one came. The call id makes it once.
func (c *Connector) onCall(meta types.BasicCallMeta, video, group bool) bool {
	ctx, cancel := context.WithTimeout(c.runCtx(), acceptTimeout)
	defer cancel()
	caller := c.canonicalJID(ctx, meta.From)
	if !meta.CallCreator.IsEmpty() {
		caller = c.canonicalJID(ctx, meta.CallCreator)
	}
	chat := caller
	if group && !meta.GroupJID.IsEmpty() {
		chat = meta.GroupJID.ToNonAD()
	}
	kind := "voice"
	if video {
		kind = "video"
	}
	name := c.chats.senderName(ctx, caller, "", false)
	ev := bridge.Event{
		Kind:   bridge.KindMessage,
		Chat:   chatRef(chat),
		ID:     "call." + meta.CallID,
		Sender: bridge.Sender{ID: caller.String(), Name: name},
		Time:   meta.Timestamp,
		Text:   fmt.Sprintf("📞 %s call from %s: WhatsApp calls ring only on the phone.", capitalized(kind), displayName(name, caller)),
	}
	ev.Chat.Name = c.chats.chatName(ctx, chat)
	return c.submit(ctx, &ev)
}

func capitalized(s string) string { return strings.ToUpper(s[:1]) + s[1:] }

// displayName is a person's name, else their number.
func displayName(name string, jid types.JID) string {
	if name != "" {
		return name
	}
	return displayNumber(jid)
}
