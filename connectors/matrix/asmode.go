package matrix

// Appservice mode wired into the Connector. Its chat ids are the origin
// chats' ids (a WhatsApp JID): the portal room made for each is internal,
// so a `chats: all` route pairs WhatsApp chat X with Matrix chat X. A
// route may also name a room id, which is then relayed like in bot mode
// but with the ghosts speaking.

import (
	"cmp"
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
			asked := !ok || c.asking(chatDescription(origin.Connector, chat))
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
				c.updatePortal(ctx, origin, p, info)
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

// updatePortal brings the portal p of origin up to info: the chat may
// have been renamed or given another topic or picture since. A failed
// update is reported once and must not hold a message up.
func (c *Connector) updatePortal(ctx context.Context, origin bridge.ChatRef, p portalRow, info portalInfo) {
	as := c.as
	if p.outdated(info) {
		if err := as.syncPortal(ctx, origin, info); err != nil {
			c.warnOnce("portal:"+origin.ID, fmt.Sprintf("matrix connector %s: cannot update the portal of %s (messages still go through): %s", c.name, origin.ID, oneLine(err)))
		}
	}
	if info.asked {
		if now, ok, err := as.portal(ctx, origin); err == nil && ok {
			as.chatDescribed(origin, info, now)
		}
	}
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
	if c.asking(senderDescription(originConnector, sender)) {
		c.describeGhost(ctx, originConnector, chat, sender, ghost, false)
	}
}

// describeGhost asks the origin about sender and gives the ghost its
// picture, and with rename its name too (a message names its ghost
// itself); see syncGhostAvatar.
func (c *Connector) describeGhost(ctx context.Context, originConnector, chat, sender string, ghost id.UserID, rename bool) {
	key := senderDescription(originConnector, sender)
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
	after := describeAgain
	if rename && desc.Name != "" {
		if err := c.as.ensureGhost(ctx, ghost, desc.Name); err != nil {
			c.warnOnce("ghost-name:"+string(ghost), fmt.Sprintf("matrix connector %s: cannot rename %s (messages still go through): %s", c.name, ghost, oneLine(err)))
			after = describeRetry
		}
	}
	if err := c.as.setGhostAvatar(ctx, ghost, desc.AvatarID, desc.Avatar); err != nil {
		c.warnOnce("ghost-avatar:"+string(ghost), fmt.Sprintf("matrix connector %s: cannot set the picture of %s (messages still go through): %s", c.name, ghost, oneLine(err)))
		after = describeRetry
	}
	c.as.described.done(key, asked, after)
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
// origin's chat id, and the ghost of its person id, where they exist, are
// described again and updated in the background (refreshLoop), so a new
// name shows at once; the core calls this from the origin's event path,
// which must not wait on Matrix.
func (c *Connector) DescriptionChanged(origin, id string) {
	keys := []describedKey{chatDescription(origin, id), senderDescription(origin, id)}
	c.mu.Lock()
	defer c.mu.Unlock()
	as := c.as
	if as == nil {
		return
	}
	// Under mu with the queueing, so a message in between either asks
	// the origin itself or finds the update queued (asking).
	as.described.forget(keys...)
	if c.ctx == nil || c.ctx.Err() != nil {
		return // stopping: the next message asks
	}
	q := &c.refresh
	for _, k := range keys {
		if q.queued[k] {
			continue // coalesced with the update already waiting
		}
		if q.queued == nil {
			q.queued, q.running = map[describedKey]bool{}, map[describedKey]bool{}
		}
		q.queued[k] = true
		q.waiting = append(q.waiting, k)
	}
	for q.workers < maxRefreshers && q.workers < len(q.waiting) {
		q.workers++
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.refreshLoop()
		}()
	}
}

// maxRefreshers bounds the updates in flight, so a burst of changes
// (WhatsApp's names after linking) does not crowd the origin or the
// homeserver.
const maxRefreshers = 2

// refreshTimeout bounds one portal's or ghost's update.
const refreshTimeout = 2 * time.Minute

// refreshQueue is what DescriptionChanged left to update, guarded by
// Connector.mu. A key is in waiting at most once and updated by one
// worker at a time, so changes during an update make one more; workers
// end when nothing waits.
type refreshQueue struct {
	waiting []describedKey
	queued  map[describedKey]bool // in waiting
	running map[describedKey]bool // being updated
	workers int
}

// next takes the first waiting key no worker is updating.
func (q *refreshQueue) next() (describedKey, bool) {
	for i, k := range q.waiting {
		if !q.running[k] {
			q.waiting = slices.Delete(q.waiting, i, i+1)
			delete(q.queued, k)
			q.running[k] = true
			return k, true
		}
	}
	return describedKey{}, false
}

// asking reports whether a message should ask the origin about k: it is
// due, and no update is waiting or under way that will.
func (c *Connector) asking(k describedKey) bool {
	c.mu.Lock()
	busy := c.refresh.queued[k] || c.refresh.running[k]
	c.mu.Unlock()
	return !busy && c.as.described.due(k)
}

// refreshLoop updates waiting portals and ghosts until none waits or the
// connector stops.
func (c *Connector) refreshLoop() {
	q := &c.refresh
	for {
		c.mu.Lock()
		ctx := c.ctx
		k, ok := q.next()
		if !ok || ctx.Err() != nil {
			if ok {
				delete(q.running, k)
			}
			if ctx.Err() != nil {
				q.waiting, q.queued = nil, nil // the next message asks
			}
			q.workers--
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.refreshOne(ctx, k)
		c.mu.Lock()
		delete(q.running, k)
		c.mu.Unlock()
	}
}

// refreshOne describes k again and updates its portal or ghost, if it
// has one: none is made here. Failures are reported once; the next
// message tries again (described).
func (c *Connector) refreshOne(ctx context.Context, k describedKey) {
	if c.client() == nil {
		return // the homeserver has not answered yet; the next message asks
	}
	ctx, cancel := context.WithTimeout(ctx, refreshTimeout)
	defer cancel()
	as := c.as
	if !k.sender {
		origin := bridge.ChatRef{Connector: k.origin, ID: k.chatID}
		p, ok, err := as.portal(ctx, origin)
		if err != nil {
			c.log.Warn("cannot look up a portal to update", "chat", origin.String(), "err", oneLine(err))
		}
		if ok {
			// No name from an event: the origin's (describeChat) is taken.
			c.updatePortal(ctx, origin, p, c.describeChat(ctx, origin))
		}
		return
	}
	ghost := as.ghostID(k.chatID)
	chat, ok, err := as.ghostChat(ctx, ghost, k.origin)
	if err != nil {
		c.log.Warn("cannot look up a ghost to update", "ghost", ghost, "err", oneLine(err))
	}
	if ok {
		c.describeGhost(ctx, k.origin, cmp.Or(chat, k.chatID), k.chatID, ghost, true)
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
