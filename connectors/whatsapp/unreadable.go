package whatsapp

import (
	"context"
	"fmt"
	"strings"
	"sync"

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
		ev.Text, ev.Notice = viewOnceText, true
		return c.submit(ctx, &ev)
	}
	if err := c.store.Write(ctx, func(tx *bridge.Tx) error {
		_, err := tx.Exec(`INSERT INTO whatsapp_placeholders (link, chat, id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, c.name, chat.String(), info.ID)
		return err
	}); err != nil {
		c.log.Error("could not note an undecryptable WhatsApp message", "link", c.name, "chat", chat.String(), "err", err)
		return false
	}
	c.notePlaceholder(chat.String(), info.ID, true)
	return c.submit(ctx, &ev)
}

// placeholders are the messages shown as "waiting for this message",
// kept in memory too so that a live message costs no query: few are
// ever waiting.
type placeholders struct {
	mu     sync.Mutex
	loaded bool
	ids    map[[2]string]bool // chat, message id
}

// placeholderShown says whether a placeholder of chat's message id waits.
func (c *Connector) placeholderShown(ctx context.Context, chat, id string) (bool, error) {
	p := &c.placeholders
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.loaded {
		rows, err := c.store.QueryContext(ctx, `SELECT chat, id FROM whatsapp_placeholders WHERE link = ?`, c.name)
		if err != nil {
			return false, fmt.Errorf("read the placeholders shown: %w", err)
		}
		defer rows.Close()
		p.ids = map[[2]string]bool{}
		for rows.Next() {
			var k [2]string
			if err := rows.Scan(&k[0], &k[1]); err != nil {
				return false, err
			}
			p.ids[k] = true
		}
		if err := rows.Err(); err != nil {
			return false, err
		}
		p.loaded = true
	}
	return p.ids[[2]string{chat, id}], nil
}

// notePlaceholder records that chat's message id is shown as waiting.
func (c *Connector) notePlaceholder(chat, id string, shown bool) {
	p := &c.placeholders
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.loaded {
		return // read whole at the first look
	}
	if shown {
		p.ids[[2]string{chat, id}] = true
	} else {
		delete(p.ids, [2]string{chat, id})
	}
}

// forgetPlaceholders drops what is known in memory (an unlink).
func (c *Connector) forgetPlaceholders() {
	c.placeholders.mu.Lock()
	c.placeholders.loaded = false
	c.placeholders.mu.Unlock()
}

// replacePlaceholder turns ev, a message that came once decrypted, into
// what replaces its placeholder, if one was shown: an edit of it (so
// replies to the placeholder find the message), or, for media, which an
// edit cannot carry, a delete of it and ev under another id. It returns
// what to submit (ev itself when it replaces nothing) and whether a
// placeholder is replaced.
func (c *Connector) replacePlaceholder(ctx context.Context, ev *bridge.Event) ([]*bridge.Event, bool, error) {
	if ev.Kind != bridge.KindMessage {
		return []*bridge.Event{ev}, false, nil
	}
	shown, err := c.placeholderShown(ctx, ev.Chat.ID, ev.ID)
	if err != nil || !shown {
		return []*bridge.Event{ev}, false, err
	}
	id := ev.ID
	if len(ev.Media) == 0 {
		edit := *ev
		edit.Kind, edit.Target, edit.ID = bridge.KindEdit, id, id+placeholderSuffix
		return []*bridge.Event{&edit}, true, nil
	}
	gone := bridge.Event{Kind: bridge.KindDelete, Chat: ev.Chat, ID: id + "#placeholder-gone", Sender: ev.Sender, Time: ev.Time, Target: id}
	msg := *ev
	msg.ID = id + placeholderSuffix
	return []*bridge.Event{&gone, &msg}, true, nil
}

// placeholderReplaced forgets a placeholder once what replaced it is in.
func (c *Connector) placeholderReplaced(ctx context.Context, chat, id string) {
	if err := c.store.Write(ctx, func(tx *bridge.Tx) error {
		_, err := tx.Exec(`DELETE FROM whatsapp_placeholders WHERE link = ? AND chat = ? AND id = ?`, c.name, chat, id)
		return err
	}); err != nil {
		c.log.Warn("could not forget a replaced placeholder", "link", c.name, "chat", chat, "err", err)
	}
	c.notePlaceholder(chat, id, false)
}

// onCall relays a call's start as a notice in the caller's chat (the
// group's, for a group call): calls ring only on the phone, and the
// owner elsewhere would not know one came. The call id makes it once.
// The call is noted, so that its end, unanswered, is a missed call.
func (c *Connector) onCall(meta types.BasicCallMeta, video, group bool) bool {
	ctx, cancel := context.WithTimeout(c.runCtx(), acceptTimeout)
	defer cancel()
	caller, chat := c.callParties(ctx, meta, group)
	c.calls.rung(meta.CallID, callState{caller: caller, chat: chat, video: video})
	name := c.chats.senderName(ctx, caller, "", false)
	ev := c.callEvent(ctx, meta, caller, chat, name)
	ev.ID = "call." + meta.CallID
	ev.Text = fmt.Sprintf("📞 %s call from %s: WhatsApp calls ring only on the phone.", capitalized(callKind(video)), displayName(name, caller))
	return c.submit(ctx, &ev)
}

// onCallEnd says a call that ended unanswered was missed, as WhatsApp
// shows it in the chat. One answered on the phone (WhatsApp tells linked
// devices with an accept) ends with nothing more said: the owner took
// it. A call whose start this run did not see (a restart while it rang)
// is missed too, its kind unknown.
func (c *Connector) onCallEnd(meta types.BasicCallMeta) bool {
	st, known := c.calls.end(meta.CallID)
	if st.answered {
		return true
	}
	ctx, cancel := context.WithTimeout(c.runCtx(), acceptTimeout)
	defer cancel()
	if !known {
		st.caller, st.chat = c.callParties(ctx, meta, !meta.GroupJID.IsEmpty())
	}
	if isOwn(c.dev(), st.caller.String()) {
		return true // the owner's own call, placed from the phone
	}
	name := c.chats.senderName(ctx, st.caller, "", false)
	ev := c.callEvent(ctx, meta, st.caller, st.chat, name)
	ev.ID = "call." + meta.CallID + ".missed"
	kind := "call"
	if known {
		kind = callKind(st.video) + " call"
	}
	ev.Text = fmt.Sprintf("📞 Missed %s from %s", kind, displayName(name, st.caller))
	return c.submit(ctx, &ev)
}

// callParties is who placed a call and the chat it belongs to.
func (c *Connector) callParties(ctx context.Context, meta types.BasicCallMeta, group bool) (caller, chat types.JID) {
	caller = c.canonicalJID(ctx, meta.From)
	if !meta.CallCreator.IsEmpty() {
		caller = c.canonicalJID(ctx, meta.CallCreator)
	}
	chat = caller
	if group && !meta.GroupJID.IsEmpty() {
		chat = meta.GroupJID.ToNonAD()
	}
	return caller, chat
}

// callEvent is a call's notice in chat, from its caller.
func (c *Connector) callEvent(ctx context.Context, meta types.BasicCallMeta, caller, chat types.JID, name string) bridge.Event {
	ev := bridge.Event{
		Kind:   bridge.KindMessage,
		Chat:   chatRef(chat),
		Sender: bridge.Sender{ID: caller.String(), Name: name},
		Time:   meta.Timestamp,
		Notice: true,
	}
	ev.Chat.Name = c.chats.chatName(ctx, chat)
	return ev
}

func callKind(video bool) string {
	if video {
		return "video"
	}
	return "voice"
}

// callLog remembers the calls rung since the link started, until they
// end, and a few after (so an end delivered again is not a second missed
// call). A call that never ends (its end lost) is dropped with the
// oldest once maxCalls are kept.
type callLog struct {
	mu    sync.Mutex
	calls map[string]*callState
	order []string // ids, oldest first
}

type callState struct {
	caller, chat    types.JID
	video, answered bool
	ended           bool
}

const maxCalls = 256

func (l *callLog) rung(id string, st callState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.calls == nil {
		l.calls = map[string]*callState{}
	}
	if old, ok := l.calls[id]; ok {
		st.answered, st.ended = old.answered, old.ended
		*old = st
		return
	}
	if len(l.order) >= maxCalls {
		delete(l.calls, l.order[0])
		l.order = l.order[1:]
	}
	l.calls[id] = &st
	l.order = append(l.order, id)
}

// answered notes that the call was taken on one of the owner's devices.
func (l *callLog) answered(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st, ok := l.calls[id]; ok {
		st.answered = true
	}
}

// end notes that the call ended and returns what is known of it; an end
// already seen returns it as answered, so nothing is said twice.
func (l *callLog) end(id string) (callState, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, ok := l.calls[id]
	if !ok {
		return callState{}, false
	}
	out := *st
	if st.ended {
		out.answered = true
	}
	st.ended = true
	return out, true
}

func capitalized(s string) string { return strings.ToUpper(s[:1]) + s[1:] }

// displayName is a person's name, else their number.
func displayName(name string, jid types.JID) string {
	if name != "" {
		return name
	}
	return displayNumber(jid)
}
