package whatsapp

import (
	"context"
	"errors"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
)

// Typing, read receipts and the link's presence. WhatsApp sends a linked
// device its contacts' typing only while the device says it is available
// (the `presence` option); contacts' and the owner's read receipts are
// relayed as read events. None of it is stored: the core hands typing and
// reads on best effort, and a failure costs only the marker.

// What the link tells WhatsApp of itself (Options.Presence).
const (
	PresenceAvailable   = "available"
	PresenceUnavailable = "unavailable"
)

// presenceTimeout bounds telling WhatsApp the presence: one frame, never
// worth holding a connect or a stop up for.
const presenceTimeout = 2 * time.Second

// presenceSender is the client's way to announce the link's presence; a
// scripted client without it announces nothing.
type presenceSender interface {
	SendPresence(ctx context.Context, state types.Presence) error
}

var _ presenceSender = (*whatsmeow.Client)(nil)

// announcePresence tells WhatsApp the configured presence, after each
// connect and when the account's name arrives: whatsmeow refuses to send
// a presence without the name (WhatsApp shows it to contacts), which a
// newly linked device learns from the phone's app state after connecting.
// It is called on whatsmeow's goroutines: the name is checked as recorded
// under the connector's lock, not read from the device whatsmeow writes.
func (c *Connector) announcePresence() {
	cli, _ := c.current()
	ps, ok := cli.(presenceSender)
	if !ok || c.LinkStatus().Account.Name == "" {
		return
	}
	state := types.PresenceAvailable
	if c.opts.Presence == PresenceUnavailable {
		state = types.PresenceUnavailable
	}
	ctx, cancel := context.WithTimeout(c.runCtx(), presenceTimeout)
	defer cancel()
	if err := ps.SendPresence(ctx, state); err != nil && !errors.Is(err, whatsmeow.ErrNoPushName) {
		c.log.Debug("could not tell WhatsApp the link's presence; typing may not arrive until it reconnects", "link", c.name, "presence", state, "err", err)
	}
}

// leavePresence says unavailable before a stop, so WhatsApp does not take
// the link for online (and keep the phone's notifications back) until it
// notices the connection gone.
func (c *Connector) leavePresence(ctx context.Context, cli waClient) {
	ps, ok := cli.(presenceSender)
	if !ok || c.opts.Presence != PresenceAvailable || !cli.IsConnected() || c.LinkStatus().Account.Name == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, presenceTimeout)
	defer cancel()
	if err := ps.SendPresence(ctx, types.PresenceUnavailable); err != nil {
		c.log.Debug("could not tell WhatsApp the link is leaving", "link", c.name, "err", err)
	}
}

// onPresence relays a contact's typing, and its end.
func (c *Connector) onPresence(e *events.ChatPresence) {
	if (e.State != types.ChatPresenceComposing && e.State != types.ChatPresencePaused) || e.IsFromMe {
		return
	}
	ctx := c.runCtx()
	sender := c.personOf(ctx, e.Sender, e.SenderAlt)
	chat := sender
	if e.IsGroup {
		chat = c.canonicalJID(ctx, e.Chat)
	}
	ev := bridge.Event{
		Kind:          bridge.KindTyping,
		Chat:          chatRef(chat),
		Sender:        bridge.Sender{ID: sender.String(), Name: c.chats.senderName(ctx, sender, "", false)},
		Time:          time.Now(),
		StoppedTyping: e.State == types.ChatPresencePaused,
	}
	c.submit(ctx, &ev)
}

// onReceipt relays read receipts: a contact's (they read what the account
// sent: their ghost's marker moves on Matrix) and the owner's own, read on
// the phone (other platforms can mark the chat read). Target is the last
// message read; the core finds its copies.
func (c *Connector) onReceipt(e *events.Receipt) {
	if e.IsFromMe {
		c.heardFromPhone(e.Sender)
	}
	read := e.Type == types.ReceiptTypeRead || (e.IsFromMe && e.Type == types.ReceiptTypeReadSelf)
	if !read || len(e.MessageIDs) == 0 || (e.Chat == types.StatusBroadcastJID && !c.opts.StatusBroadcasts) {
		return
	}
	ctx := c.runCtx()
	var chat types.JID
	var sender bridge.Sender
	if e.IsFromMe {
		_, dev := c.current()
		sender = bridge.Sender{ID: ownJID(dev).String(), IsOwner: true}
		chat = c.personOf(ctx, e.Chat, e.RecipientAlt)
	} else {
		who := c.personOf(ctx, e.Sender, e.SenderAlt)
		sender = bridge.Sender{ID: who.String(), Name: c.chats.senderName(ctx, who, "", false)}
		chat = who
	}
	if e.IsGroup {
		chat = c.canonicalJID(ctx, e.Chat)
	}
	ev := bridge.Event{
		Kind:   bridge.KindRead,
		Chat:   chatRef(chat),
		Sender: sender,
		Time:   e.Timestamp,
		Target: e.MessageIDs[len(e.MessageIDs)-1],
	}
	c.submit(ctx, &ev)
}

// personOf is a person's id for typing or a receipt: canonicalJID's,
// except that a LID not met before is not made their id for good (a LID
// person: people.go). An event that is not stored must not decide how
// someone is named; the number WhatsApp gave beside it (alt) is used
// instead, or else the LID for this event alone.
func (c *Connector) personOf(ctx context.Context, jid, alt types.JID) types.JID {
	jid = jid.ToNonAD()
	if jid.Server == types.HiddenUserServer && !c.lidSettled(ctx, jid) {
		if alt.Server == types.DefaultUserServer {
			return c.canonicalJID(ctx, alt)
		}
		return jid
	}
	return c.canonicalJID(ctx, jid)
}

// lidSettled reports whether canonicalJID already knows how to name lid:
// the account's own, a LID person, or one whose number whatsmeow knows.
func (c *Connector) lidSettled(ctx context.Context, lid types.JID) bool {
	dev := c.dev()
	if dev == nil || dev.ID == nil || (!dev.LID.IsEmpty() && lid.User == dev.LID.User) {
		return true
	}
	c.loadPeople(ctx)
	c.people.mu.Lock()
	known := c.people.lids[lid]
	c.people.mu.Unlock()
	if known {
		return true
	}
	if dev.LIDs != nil {
		if pn, err := dev.LIDs.GetPNForLID(ctx, lid); err == nil && !pn.IsEmpty() {
			return true
		}
	}
	return false
}
