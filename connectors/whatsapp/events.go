package whatsapp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.mau.fi/whatsmeow/appstate"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
)

// acceptTimeout bounds how long a WhatsApp event waits for the store. On
// timeout the event is not acknowledged, so WhatsApp delivers it again.
const acceptTimeout = 30 * time.Second

// handle receives every whatsmeow event. Its result tells whatsmeow
// whether the event was handled: false leaves a message unacknowledged,
// and WhatsApp redelivers it, which is how nothing accepted is lost.
func (c *Connector) handle(evt any) bool {
	switch e := evt.(type) {
	case *events.Message:
		return c.onMessage(e)
	case *events.UndecryptableMessage:
		return c.onUndecryptable(e)
	case *events.CallOffer:
		return c.onCall(e.BasicCallMeta, e.Data != nil && e.Data.GetChildByTag("video").Tag == "video", false)
	case *events.CallOfferNotice:
		return c.onCall(e.BasicCallMeta, e.Media == "video", e.Type == "group")
	case *events.CallAccept:
		c.calls.answered(e.CallID)
	case *events.CallTerminate:
		return c.onCallEnd(e.BasicCallMeta)
	case *events.Receipt:
		c.onReceipt(e)
	case *events.ChatPresence:
		c.onPresence(e)
	case *events.GroupInfo:
		return c.onGroupInfo(e)
	case *events.Picture:
		c.onPicture(e)
	case *events.JoinedGroup:
		// What was asked while not a member (no topic, no picture) is wrong now.
		jid := e.JID.ToNonAD()
		c.forgetDescription([]types.JID{jid}, descTopic, descPicture)
		// A new chat: routes may name it, and mirrors (Matrix portals) want it.
		ctx, cancel := context.WithTimeout(c.runCtx(), acceptTimeout)
		c.chats.putGroup(ctx, e.JID, e.GroupInfo.Name)
		if e.GroupInfo.IsEphemeral {
			c.setTimer(ctx, e.JID, e.GroupInfo.DisappearingTimer)
		}
		cancel()
		c.withSink(func(s bridge.Sink) { s.ChatsChanged() })

	case *events.Connected:
		c.versionAccepted()
		c.setState(bridge.LinkConnected, bridge.ReasonNone, "")
		c.kickBackfill()
		c.checkPhone()
		c.withSink(func(s bridge.Sink) { s.Resume("") })
		// Not in wg: Stop may be waiting already. The context ends it.
		go c.refreshChats(c.runCtx())
		// Each connection starts unavailable: WhatsApp sends typing
		// only once told otherwise (presence.go).
		c.announcePresence()
	case *events.Disconnected:
		c.setState(bridge.LinkConnecting, bridge.ReasonConnectionLost, "")
	case *events.KeepAliveTimeout:
		was := c.LinkStatus().State
		c.setState(bridge.LinkPhoneOffline, bridge.ReasonNone, "keep-alive lost")
		if was != bridge.LinkPhoneOffline {
			c.notice("WhatsApp link '%s' cannot reach WhatsApp (keep-alive lost); messages wait until it answers again.", c.name)
		}
	case *events.KeepAliveRestored:
		was := c.LinkStatus().State
		c.setState(bridge.LinkConnected, bridge.ReasonNone, "")
		if was == bridge.LinkPhoneOffline {
			c.notice("WhatsApp link '%s' is reachable again; relaying.", c.name)
		}
	case *events.LoggedOut:
		c.onLoggedOut(e.Reason.String())
	case *events.StreamReplaced:
		c.setState(bridge.LinkReplaced, bridge.ReasonNone, "")
		c.notice("WhatsApp link '%s' was taken over by another client using the same session; phonebridge stopped relaying it. Restart phonebridge to take it back.", c.name)
	case *events.TemporaryBan:
		until := time.Now().Add(e.Expire)
		c.setStatus(func(s *bridge.LinkStatus) {
			s.State, s.Reason, s.Cause, s.Until = bridge.LinkBanned, bridge.ReasonNone, e.Code.String(), until
		})
		c.notice("WhatsApp temporarily banned link '%s' (%s) until %s; messages wait until then.", c.name, e.Code, until.Format(time.RFC1123))
		// whatsmeow does not reconnect after a ban: try again once it ends.
		c.reconnectAfter(e.Expire, bridge.ReasonBanOver, "")
	case *events.ClientOutdated:
		// Retried with WhatsApp Web's current version before it is
		// reported (version.go).
		c.onClientOutdated()
	case *events.ConnectFailure:
		if !e.Reason.IsLoggedOut() {
			// whatsmeow dispatches this only for refusals it does not
			// retry itself; without a retry "connecting" would be a lie.
			cause := strings.TrimSpace(fmt.Sprintf("%s %s", e.Reason, e.Message))
			c.setState(bridge.LinkConnecting, bridge.ReasonRefused, cause)
			c.reconnectAfter(c.opts.ReconnectMax, bridge.ReasonRefused, cause)
		}
	case *events.PushName:
		c.nameChanged(e.JID, e.JIDAlt)
	case *events.Contact:
		c.nameChanged(e.JID, types.EmptyJID)
	case *events.BusinessName:
		c.nameChanged(e.JID, types.EmptyJID)
	case *events.PushNameSetting:
		c.setAccountName(e.Action.GetName())
		c.announcePresence() // WhatsApp shows contacts the new name
	case *events.AppStateSyncComplete:
		// The first sync after linking sets the account's own name without
		// a PushNameSetting event; whatsmeow set it on this goroutine.
		if e.Name == appstate.WAPatchCriticalBlock {
			if dev := c.dev(); dev != nil {
				c.setAccountName(dev.PushName)
			}
			// A new link's first connect had no name to announce with.
			c.announcePresence()
		}
	}
	return true
}

// setAccountName records the account's own name (what `links` shows),
// which the phone's app state brings after linking.
func (c *Connector) setAccountName(name string) {
	if name == "" {
		return
	}
	c.mu.Lock()
	c.status.Account.Name = name
	c.mu.Unlock()
}

// onMessage relays one message, returning once it is committed.
func (c *Connector) onMessage(e *events.Message) bool {
	if e.Info.IsFromMe {
		c.heardFromPhone(e.Info.Sender)
	}
	ctx, cancel := context.WithTimeout(c.runCtx(), acceptTimeout)
	defer cancel()
	if notif := historyNotification(e); notif != nil {
		return c.onHistory(ctx, notif)
	}
	return c.relayMessage(ctx, e, false)
}

// relayMessage converts e and hands it to the core, as history (from
// WhatsApp's history sync, at its own time) or live; it says whether the
// core took it or it is nothing to relay.
func (c *Connector) relayMessage(ctx context.Context, e *events.Message, history bool) bool {
	if e.Info.Chat == types.StatusBroadcastJID && !c.opts.StatusBroadcasts {
		return true
	}
	if e.Message.GetPollUpdateMessage() != nil {
		return c.relayVote(ctx, e, history) // decrypted as it came (votes.go)
	}
	e = c.canonical(ctx, e)
	in, ok := convertIncoming(e, c.chats.senderName(ctx, e.Info.Sender, e.Info.PushName, e.Info.IsFromMe))
	if in.Timer != nil && !history {
		c.setTimer(ctx, e.Info.Chat, *in.Timer)
	}
	if !ok {
		return true
	}
	if !history {
		if err := c.historyFirst(ctx, in.Event.Chat.ID); err != nil {
			c.log.Error("a chat's history could not be relayed before its new message; WhatsApp will deliver the message again", "link", c.name, "chat", in.Event.Chat.ID, "err", err)
			return false
		}
	}
	c.remember(in.Ref)
	in.Event.Chat.Name = c.chats.chatName(ctx, e.Info.Chat)
	in.Event.History = history
	c.nameMentions(ctx, &in.Event, mentionedJIDs(e))
	evs, replaced, err := c.replacePlaceholder(ctx, &in.Event)
	if err != nil {
		c.log.Error("a WhatsApp message was not relayed; WhatsApp will deliver it again", "link", c.name, "chat", in.Event.Chat.ID, "err", err)
		return false
	}
	for _, ev := range evs {
		if !c.submit(ctx, ev) {
			return false
		}
	}
	if replaced {
		c.placeholderReplaced(ctx, in.Event.Chat.ID, in.Event.ID)
	}
	return true
}

// submit hands ev to the core and reports whether it was taken: an event
// no route wants counts as handled, anything else that failed does not.
func (c *Connector) submit(ctx context.Context, ev *bridge.Event) bool {
	c.mu.Lock()
	sink := c.sink
	c.mu.Unlock()
	if sink == nil {
		return false // not started: leave it to WhatsApp to redeliver
	}
	err := bridge.Accept(ctx, sink, ev)
	switch {
	case err == nil, errors.Is(err, bridge.ErrNoRoute):
		return true
	default:
		c.log.Error("a WhatsApp event was not stored; WhatsApp will deliver it again", "link", c.name, "chat", ev.Chat.ID, "err", err)
		return false
	}
}

// onGroupInfo relays joins, leaves and subject changes as notices, and
// keeps the group's name and description current.
func (c *Connector) onGroupInfo(e *events.GroupInfo) bool {
	ctx, cancel := context.WithTimeout(c.runCtx(), acceptTimeout)
	defer cancel()
	if e.Name != nil {
		c.chats.putGroup(ctx, e.JID, e.Name.Name)
		c.withSink(func(s bridge.Sink) { s.ChatsChanged() })
		// Portals named after the group take the new name now.
		c.forgetDescription([]types.JID{e.JID})
	}
	if e.Topic != nil {
		c.forgetDescription([]types.JID{e.JID}, descTopic)
	}
	if eph := e.Ephemeral; eph != nil {
		timer := uint32(0)
		if eph.IsEphemeral {
			timer = eph.DisappearingTimer
		}
		c.setTimer(ctx, e.JID, timer)
	}
	names := func(j types.JID) string { return c.chats.senderName(ctx, j, "", false) }
	ok := true
	_, dev := c.current()
	for _, ev := range convertGroupInfo(e, names) {
		ev := ev
		ev.Chat.Name = c.chats.chatName(ctx, e.JID)
		ev.Sender.IsOwner = isOwn(dev, ev.Sender.ID)
		if ev.ID == "" {
			// Stable per change, so a redelivered notification is relayed once.
			ev.ID = fmt.Sprintf("group.%s.%d.%d", e.JID.User, e.Timestamp.UnixMilli(), len(ev.Text))
		}
		ok = c.submit(ctx, &ev) && ok
	}
	return ok
}

// onLoggedOut handles the device being removed (from the phone, or by
// WhatsApp): whatsmeow has deleted the session already.
func (c *Connector) onLoggedOut(reason string) {
	c.mu.Lock()
	cli := c.client
	c.client, c.device = nil, nil
	c.status.Account = bridge.LinkAccount{}
	c.mu.Unlock()
	if cli != nil {
		go cli.Disconnect()
	}
	if err := c.forgetDevice(context.Background()); err != nil {
		c.log.Error("could not forget the logged-out WhatsApp link", "link", c.name, "err", err)
	}
	c.setState(bridge.LinkLoggedOut, bridge.ReasonNone, reason)
	c.notice("WhatsApp link '%s' was logged out from the phone — run `phonebridge link %s`", c.name, c.name)
	c.withSink(func(s bridge.Sink) { s.ChatsChanged() })
}

// notice posts an operator notice through the core.
func (c *Connector) notice(format string, args ...any) {
	text := fmt.Sprintf(format, args...)
	c.mu.Lock()
	sink := c.sink
	c.mu.Unlock()
	if sink == nil {
		c.log.Warn(text, "link", c.name)
		return
	}
	sink.Notice(text)
}

func (c *Connector) withSink(fn func(bridge.Sink)) {
	c.mu.Lock()
	sink := c.sink
	c.mu.Unlock()
	if sink != nil {
		fn(sink)
	}
}

// runCtx is the connector's life (Start to Stop), or a background context
// when it was not started (a CLI linking in-process).
func (c *Connector) runCtx() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx == nil {
		return context.Background()
	}
	return c.ctx
}

// isOwn reports whether senderID (a JID without device) is the account's
// own, by phone number or by LID.
func isOwn(dev *store.Device, senderID string) bool {
	if dev == nil || dev.ID == nil || senderID == "" {
		return false
	}
	return senderID == ownJID(dev).String() || (!dev.LID.IsEmpty() && senderID == dev.LID.ToNonAD().String())
}
