package matrix

// Appservice mode wired into the Connector. Its chat ids are the origin
// chats' ids (a WhatsApp JID): the portal room made for each is internal,
// so a `chats: all` route pairs WhatsApp chat X with Matrix chat X. A
// route may also name a room id, which is then relayed like in bot mode
// but with the ghosts speaking.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
)

// botDisplayName is the bridge bot's display name, set when it has none.
const botDisplayName = "phonebridge"

// startAppservice loads the registration, starts the appservice API and
// leaves reaching the homeserver to the background: only what retrying
// cannot fix (no registration, the listen address taken) fails Start.
func (c *Connector) startAppservice(ctx context.Context, sink bridge.Sink) error {
	path := c.env.Path(c.opts.Registration)
	reg, stale, err := loadRegistration(c.name, &c.opts, path)
	if err != nil {
		return fmt.Errorf("matrix connector %s: %w", c.name, err)
	}
	if len(stale) > 0 {
		c.log.Warn("the appservice registration no longer matches the options: run `phonebridge matrix registration "+c.name+"` and restart the homeserver",
			"registration", path, "stale", strings.Join(stale, ", "))
	}
	env := c.env
	env.Logger = c.log
	as, err := newASBridge(ctx, env, &c.opts, reg)
	if err != nil {
		return fmt.Errorf("matrix connector %s: %w", c.name, err)
	}
	srv := as.newServer(c.handleTxn)
	if err := c.loadManagementRooms(ctx); err != nil {
		return fmt.Errorf("matrix connector %s: %w", c.name, err)
	}
	c.mu.Lock()
	c.as = as
	c.self = as.bot
	c.sink = sink
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.mu.Unlock()
	if err := srv.start(); err != nil {
		c.cancel()
		return fmt.Errorf("matrix connector %s: %w", c.name, err)
	}
	c.srv = srv
	sink.SetState(bridge.StateConnecting, "waiting for "+c.opts.Homeserver)
	c.wg.Add(3)
	go func() {
		defer c.wg.Done()
		c.asRun()
	}()
	go func() {
		defer c.wg.Done()
		c.joinLoop()
	}()
	go func() {
		defer c.wg.Done()
		c.mirrorLoop()
	}()
	return nil
}

// asRun waits for the homeserver to answer, with back-off, then makes
// sure the bot exists and reports the connector connected.
func (c *Connector) asRun() {
	r := &retrier{c: c, what: "reaching the Matrix homeserver"}
	for {
		err := c.asPrepare()
		if c.ctx.Err() != nil {
			return
		}
		if err == nil {
			break
		}
		if !c.sleep(r.fail(err)) {
			return
		}
	}
	recovered := r.ok()
	bot := c.as.botIntent()
	c.mu.Lock()
	c.cli = bot // lets the bot-mode joiner, Chats and OpenMedia work as the bot
	c.mu.Unlock()
	c.sink.SetState(bridge.StateConnected, fmt.Sprintf("appservice for %s on %s", c.as.bot, c.opts.Listen))
	if recovered {
		c.log.Info("the Matrix homeserver answers", "homeserver", c.opts.Homeserver)
	}
	// Deliveries that failed while the homeserver was away go again now.
	c.sink.Resume("")
	c.sink.ChatsChanged()
	c.kickJoiner()
	c.tellRetired(c.ctx)
	select {
	case c.mirrorKick <- struct{}{}:
	default:
	}
}

// asPrepare asks the homeserver for /versions, registers the bot (the
// homeserver may not have made it) and gives it a display name.
func (c *Connector) asPrepare() error {
	ctx, cancel := context.WithTimeout(c.ctx, loginTimeout)
	defer cancel()
	bot := c.as.botIntent()
	if _, err := bot.Versions(ctx); err != nil {
		return fmt.Errorf("ask %s for /versions: %w", c.opts.Homeserver, err)
	}
	_, _, err := c.as.newClient("").Register(ctx, &mautrix.ReqRegister{
		Username: c.as.reg.SenderLocalpart, Type: mautrix.AuthTypeAppservice, InhibitLogin: true,
	})
	if err != nil && !errors.Is(err, mautrix.MUserInUse) && !errors.Is(err, mautrix.MExclusive) {
		if isDefinite(err) {
			// Some homeservers make the sender themselves and refuse this;
			// whoami below says whether the bot works.
			c.log.Debug("the homeserver did not register the bot", "err", oneLine(err))
		} else {
			return fmt.Errorf("register the bot %s: %w", c.as.bot, err)
		}
	}
	if _, err := bot.Whoami(ctx); err != nil {
		if isDefinite(err) {
			c.warnOnce("as_token", fmt.Sprintf("matrix connector %s: %s refuses the registration's as_token (%s); load the registration into the homeserver and restart it", c.name, c.opts.Homeserver, oneLine(err)))
		}
		return fmt.Errorf("act as the bot %s: %w", c.as.bot, err)
	}
	if dn, err := bot.GetOwnDisplayName(ctx); err == nil && dn.DisplayName == "" {
		if err := bot.SetDisplayName(ctx, botDisplayName); err != nil {
			c.log.Debug("cannot set the bot's display name", "err", oneLine(err))
		}
	}
	return nil
}

// asSend delivers out: into the portal of its origin chat, or into the
// room a route names, as the ghost of its sender; the bridge's notices
// and the owner's own messages (with the sender shown) as the bot.
func (c *Connector) asSend(ctx context.Context, out *bridge.Outgoing) (string, error) {
	as := c.as
	chat := out.Chat.ID
	var room id.RoomID
	if strings.HasPrefix(chat, "!") && chat != out.Origin.ID {
		room = id.RoomID(chat) // a room the route names
	} else {
		if out.Origin.Connector == "" {
			return "", bridge.Permanentf("no origin chat to make a portal for %q", chat)
		}
		origin := bridge.ChatRef{Connector: out.Origin.Connector, ID: chat, Name: out.Origin.Name, Direct: out.Origin.Direct}
		var err error
		if !out.Kind.Durable() {
			// Typing or a receipt is worth no new room.
			if room, err = as.portalRoom(ctx, origin); err != nil || room == "" {
				return "", err
			}
		} else {
			p, ok, err := as.portal(ctx, origin)
			if err != nil {
				return "", err
			}
			// The origin is asked about its chat once per portal, and again
			// when it says the chat changed; the name comes with each event.
			info := portalInfo{Name: origin.Name, Direct: origin.Direct}
			asked := !ok || as.described.due(chatDescription(origin.Connector, chat))
			if asked {
				info = c.describeChat(ctx, origin)
			}
			if !ok {
				create := info
				if create.Name == "" {
					create.Name = chat
				}
				if room, err = as.ensurePortal(ctx, origin, create); err != nil {
					return "", classify(err)
				}
			} else {
				room = p.room
				// The chat may have been renamed or given another topic or
				// picture since; a failed update must not hold the message up.
				if p.outdated(info) {
					if err := as.syncPortal(ctx, origin, info); err != nil {
						c.warnOnce("portal:"+chat, fmt.Sprintf("matrix connector %s: cannot update the portal of %s (messages still go through): %s", c.name, chat, oneLine(err)))
					}
				}
				if asked {
					if now, ok, err := as.portal(ctx, origin); err == nil && ok {
						as.chatDescribed(origin, info, now)
					}
				}
			}
		}
	}
	s := &roomSender{room: room, guard: c.guard, maxMediaBytes: c.opts.MaxMediaBytes, pill: as.pillFor}
	if out.Sender.ID == "" || out.Sender.IsOwner || out.Notice || out.Origin.Connector == bridge.NoticeOrigin {
		// No one to speak for, a notice, or the owner, whose own account
		// is not the bridge's to use: the bot says it, naming the owner.
		s.cli, s.self = as.botIntent(), as.bot
		if out.Sender.IsOwner {
			s.senderFormat = c.opts.SenderFormat
		}
	} else {
		ghost := as.ghostID(out.Sender.ID)
		if err := as.ensureGhost(ctx, ghost, out.Sender.Name); err != nil {
			return "", classify(err)
		}
		c.syncGhostAvatar(ctx, out.Origin.Connector, chat, out.Sender.ID, ghost)
		if err := as.joinGhost(ctx, ghost, room); err != nil {
			return "", classify(err)
		}
		s.cli, s.self, s.asSender = as.intent(ghost), ghost, true
	}
	native, err := s.send(ctx, out)
	if err != nil && errors.Is(err, mautrix.MForbidden) && s.self != as.bot && ghostOut(ctx, s.cli, room) {
		// The ghost was removed without us seeing it: join again on the
		// retry. A ghost in the room that is refused stays refused.
		if lerr := as.ghostLeft(ctx, s.self, room); lerr != nil {
			c.log.Warn("cannot forget a ghost's room", "err", lerr)
		}
		return "", fmt.Errorf("send as %s (joining again on the retry): %s", s.self, oneLine(err))
	}
	return native, err
}

// ghostOut reports whether the homeserver says cli's user is not in
// room; on doubt it says no.
func ghostOut(ctx context.Context, cli *mautrix.Client, room id.RoomID) bool {
	resp, err := cli.JoinedRooms(ctx)
	return err == nil && !slices.Contains(resp.JoinedRooms, room)
}

// handleTxn relays one transaction's events to the core and returns nil
// only once the core committed all of them, so nothing acknowledged to
// the homeserver is lost.
func (c *Connector) handleTxn(ctx context.Context, txnID string, events []*event.Event) error {
	as := c.as
	c.log.Debug("a transaction from the homeserver", "txn", txnID, "events", len(events))
	var dones []chan error
	for _, evt := range events {
		if evt.StateKey != nil {
			c.asState(ctx, evt)
			continue
		}
		if evt.Type.Class == event.EphemeralEventType {
			c.asEphemeral(ctx, evt)
			continue
		}
		if as.isBridgeUser(evt.Sender) {
			continue // an echo of what the bridge sent
		}
		if c.isManagementRoom(evt.RoomID) {
			c.managementEvent(evt)
			continue
		}
		ev, ok := convertEvent(evt)
		if ok && ev.Kind == bridge.KindVote {
			ok = c.readVote(ctx, as.botIntent(), evt, ev)
		}
		if !ok {
			c.log.Debug("a Matrix event not relayed", "type", evt.Type.Type, "id", evt.ID)
			continue
		}
		as.resolveMentions(ev)
		origin, _, portal, err := as.portalOrigin(ctx, evt.RoomID)
		if err != nil {
			return err
		}
		if portal {
			if !as.allowed(evt.Sender) {
				c.refuse(ctx, evt.RoomID, evt.Sender)
				continue
			}
			ev.Chat = bridge.ChatRef{ID: origin.ID, Name: origin.Name}
		} else {
			ev.Chat.Name = c.rooms.roomName(ctx, as.botIntent(), evt.RoomID)
		}
		ev.Sender.Name = c.rooms.memberName(ctx, as.botIntent(), evt.RoomID, evt.Sender)
		ev.Sender.IsOwner = evt.Sender == as.owner
		if err := ev.Check(); err != nil {
			c.log.Debug("Matrix event not relayed", "room", evt.RoomID, "id", ev.ID, "reason", err)
			continue
		}
		done := make(chan error, 1)
		dones = append(dones, done)
		c.sink.Submit(ev, func(err error) { done <- err })
	}
	for _, done := range dones {
		select {
		case err := <-done:
			if errors.Is(err, bridge.ErrNoRoute) {
				c.log.Debug("a Matrix event no route takes", "err", err)
			} else if err != nil {
				return fmt.Errorf("the bridge did not take a Matrix event: %w", err)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// asState follows memberships: names for the room cache, ghosts that
// left, invites of the bot to rooms the routes name, and the owner's
// invites of the bot to a management room.
func (c *Connector) asState(ctx context.Context, evt *event.Event) {
	c.rooms.learn(evt.RoomID, []*event.Event{evt})
	if evt.Type != event.StateMember {
		return
	}
	user := id.UserID(*evt.StateKey)
	switch m := membership(evt.Content.Raw); {
	case c.as.isGhost(user) && (m == event.MembershipLeave || m == event.MembershipBan):
		if err := c.as.ghostLeft(ctx, user, evt.RoomID); err != nil {
			c.log.Warn("cannot forget a ghost's room", "ghost", user, "room", evt.RoomID, "err", err)
		}
	case user == c.as.bot && m == event.MembershipInvite:
		if !c.managementInvite(ctx, evt.RoomID, evt.Sender) {
			c.handleInvite(evt.RoomID)
		}
	}
}

// refuseText is what a user not in allow is told, once per room.
const refuseText = "Not relayed: you are not allowed to use this bridge (ask its operator to add you to `allow`)."

// refuse tells sender, once per room, that their messages are not
// relayed; a failure to tell is only logged.
func (c *Connector) refuse(ctx context.Context, room id.RoomID, sender id.UserID) {
	key := string(room) + "\x00" + string(sender)
	c.mu.Lock()
	told := c.refused[key]
	c.refused[key] = true
	c.mu.Unlock()
	if told {
		return
	}
	c.log.Info("a Matrix user not in allow wrote in a portal; not relayed", "user", sender, "room", room)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	content := &event.MessageEventContent{MsgType: event.MsgNotice, Body: refuseText}
	if _, err := c.as.botIntent().SendMessageEvent(ctx, room, event.EventMessage, content); err != nil {
		c.log.Warn("cannot tell a user their messages are not relayed", "room", room, "err", oneLine(err))
	}
}

// asEphemeral relays typing and read receipts from a portal or a routed
// room, best effort: they are not stored, and a failure is not retried.
// The bridge's own users' are echoes of what it relayed.
func (c *Connector) asEphemeral(ctx context.Context, evt *event.Event) {
	origin, _, portal, err := c.as.portalOrigin(ctx, evt.RoomID)
	if err != nil || (!portal && !c.isRouted(evt.RoomID)) {
		return
	}
	for _, ev := range c.convertEphemeral(evt) {
		user := id.UserID(ev.Sender.ID)
		if c.as.isBridgeUser(user) || (portal && !c.as.allowed(user)) {
			continue
		}
		if portal {
			ev.Chat = bridge.ChatRef{ID: origin.ID, Name: origin.Name}
		}
		ev.Sender.Name = c.rooms.memberName(ctx, c.as.botIntent(), evt.RoomID, user)
		ev.Sender.IsOwner = user == c.as.owner
		c.sink.Submit(ev, func(err error) {
			if err != nil && !errors.Is(err, bridge.ErrNoRoute) {
				c.log.Debug("a Matrix typing or receipt not relayed", "room", evt.RoomID, "err", err)
			}
		})
	}
}

// describeTimeout bounds asking the origin about a chat or a sender: a
// slow answer costs the picture, not the message.
const describeTimeout = 10 * time.Second

// describeChat is what the portal of origin should show: the event's own
// name and direct flag, then what the origin connector says. Without its
// answer, the topic and picture are left as they are.
func (c *Connector) describeChat(ctx context.Context, origin bridge.ChatRef) portalInfo {
	info := portalInfo{Name: origin.Name, Direct: origin.Direct, asked: true}
	info.gen = c.as.described.ask(chatDescription(origin.Connector, origin.ID))
	ctx, cancel := context.WithTimeout(ctx, describeTimeout)
	defer cancel()
	desc, err := c.sink.DescribeChat(ctx, origin)
	if err != nil {
		if !errors.Is(err, bridge.ErrNotDescribed) {
			c.log.Debug("the origin cannot describe a chat now", "chat", origin.String(), "err", oneLine(err))
			info.Failed = true
		}
		return info
	}
	if info.Name == "" {
		info.Name = desc.Name
	}
	info.Direct = info.Direct || desc.Direct
	info.Topic, info.AvatarID, info.Avatar, info.Described = desc.Topic, desc.AvatarID, desc.Avatar, true
	return info
}

// syncGhostAvatar gives the ghost the sender's picture where the origin
// describes senders. The origin is asked once per ghost, and again when it
// says the sender changed (or a while after it could not answer); a
// failure is reported once and never holds the message up.
func (c *Connector) syncGhostAvatar(ctx context.Context, originConnector, chat, sender string, ghost id.UserID) {
	key := senderDescription(originConnector, sender)
	if !c.as.described.due(key) {
		return
	}
	asked := c.as.described.ask(key)
	dctx, cancel := context.WithTimeout(ctx, describeTimeout)
	defer cancel()
	desc, err := c.sink.DescribeSender(dctx, bridge.ChatRef{Connector: originConnector, ID: chat}, sender)
	switch {
	case errors.Is(err, bridge.ErrNotDescribed):
		c.as.described.done(key, asked, describeAgain)
		return
	case err != nil:
		c.log.Debug("the origin cannot describe a sender now", "sender", sender, "err", oneLine(err))
		c.as.described.done(key, asked, describeRetry)
		return
	}
	if err := c.as.setGhostAvatar(ctx, ghost, desc.AvatarID, desc.Avatar); err != nil {
		c.warnOnce("ghost-avatar:"+string(ghost), fmt.Sprintf("matrix connector %s: cannot set the picture of %s (messages still go through): %s", c.name, ghost, oneLine(err)))
		c.as.described.done(key, asked, describeRetry)
		return
	}
	c.as.described.done(key, asked, describeAgain)
}

const (
	// describeAgain is how long a portal's or ghost's description stands
	// without the origin saying it changed: it bounds a change missed
	// while the bridge was down or its notice lost.
	describeAgain = 24 * time.Hour
	// describeRetry is how long after the origin could not answer, or
	// the picture could not be copied, it is asked again.
	describeRetry = time.Minute
)

var _ bridge.DescriptionWatcher = (*Connector)(nil)

// DescriptionChanged implements bridge.DescriptionWatcher: the portal of
// origin's chat id, and the ghost of its person id, ask the origin again
// with their next message.
func (c *Connector) DescriptionChanged(origin, id string) {
	c.mu.Lock()
	as := c.as
	c.mu.Unlock()
	if as != nil {
		as.described.forget(chatDescription(origin, id), senderDescription(origin, id))
	}
}

// describedSet says, per portal chat and per ghost sender, when to ask the
// origin about it again. The zero value is ready; not knowing one means
// asking now.
type describedSet struct {
	mu   sync.Mutex
	next map[describedKey]time.Time
	// gen counts each key's changes, so an answer asked for before a
	// change is not taken for one after it.
	gen map[describedKey]uint64
}

type describedKey struct {
	sender         bool // a ghost's sender, else a portal's chat
	origin, chatID string
}

func chatDescription(origin, chat string) describedKey {
	return describedKey{origin: origin, chatID: chat}
}

func senderDescription(origin, sender string) describedKey {
	return describedKey{sender: true, origin: origin, chatID: sender}
}

// due reports whether k should be asked about now.
func (d *describedSet) due(k describedKey) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	next, ok := d.next[k]
	return !ok || !time.Now().Before(next)
}

// ask notes that k is being asked about; done takes what it returns.
func (d *describedSet) ask(k describedKey) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.gen[k]
}

// done notes that k was asked about (when ask returned asked), and when to
// ask again; unless it changed meanwhile, which asks again now.
func (d *describedSet) done(k describedKey, asked uint64, after time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gen[k] != asked {
		return
	}
	if d.next == nil {
		d.next = map[describedKey]time.Time{}
	}
	d.next[k] = time.Now().Add(after)
}

// forget makes the keys due now: the origin said they changed.
func (d *describedSet) forget(keys ...describedKey) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gen == nil {
		d.gen = map[describedKey]uint64{}
	}
	for _, k := range keys {
		delete(d.next, k)
		d.gen[k]++
	}
}

// chatDescribed notes that origin's chat was described as info and its
// portal now shows shown: asked again after a day, or after a minute when
// the origin could not answer or its picture or topic did not make it.
func (b *asBridge) chatDescribed(origin bridge.ChatRef, info portalInfo, shown portalRow) {
	if !info.asked {
		return
	}
	after := describeAgain
	if info.Failed || info.Described && (shown.avatarID != info.AvatarID || shown.topic != info.Topic) {
		after = describeRetry
	}
	b.described.done(chatDescription(origin.Connector, origin.ID), info.gen, after)
}
