package whatsapp

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
)

// A person is one chat and one sender in phonebridge however WhatsApp
// addresses them (by phone number or by LID): the id routes name, the
// core's message map and Matrix portals and ghosts are keyed by, and
// descriptions are kept under. That id is the phone number wherever
// WhatsApp told it beside the LID when phonebridge first met the person,
// since routes and address books name people by number. A person first
// met by LID alone (their number hidden) keeps the LID for good, and
// their number, once WhatsApp tells it, names the same chat: no second
// portal, no second ghost, nothing to merge. Those people are recorded
// (whatsapp_lid_people), so a restart keeps their id.
type people struct {
	mu     sync.Mutex
	loaded bool
	lids   map[types.JID]bool // people known by LID for good
	// aliased are those whose number has since come to name their LID:
	// routes naming the number are resolved again, once.
	aliased map[types.JID]bool
	// settling says the moves MoveChats makes are the ones ChatMoves
	// found at start, all there are: once made, people are settled.
	settling atomic.Bool
}

// canonicalJID is jid's person's id (see people), without device;
// groups and other ids are themselves.
func (c *Connector) canonicalJID(ctx context.Context, jid types.JID) types.JID {
	jid = jid.ToNonAD()
	dev := c.dev()
	if (jid.Server != types.HiddenUserServer && jid.Server != types.DefaultUserServer) || dev == nil || dev.ID == nil {
		return jid
	}
	if jid.Server == types.HiddenUserServer && !dev.LID.IsEmpty() && jid.User == dev.LID.User {
		return dev.ID.ToNonAD()
	}
	c.loadPeople(ctx)
	p := &c.people
	if jid.Server == types.DefaultUserServer {
		p.mu.Lock()
		none := len(p.lids) == 0
		p.mu.Unlock()
		if none || dev.LIDs == nil {
			return jid
		}
		lid, err := dev.LIDs.GetLIDForPN(ctx, jid)
		if err != nil || lid.IsEmpty() {
			return jid
		}
		lid = lid.ToNonAD()
		p.mu.Lock()
		known := p.lids[lid]
		p.mu.Unlock()
		if !known {
			return jid
		}
		c.numberPaired(ctx, lid, jid)
		return lid
	}
	p.mu.Lock()
	known, paired := p.lids[jid], p.aliased[jid]
	p.mu.Unlock()
	if known {
		// WhatsApp may tell the number now (beside the LID, in a usync
		// answer) without using it: a chat kept under it merges as well.
		if !paired && dev.LIDs != nil {
			if pn, err := dev.LIDs.GetPNForLID(ctx, jid); err == nil && !pn.IsEmpty() {
				c.numberPaired(ctx, jid, pn.ToNonAD())
			}
		}
		return jid
	}
	if dev.LIDs != nil {
		if pn, err := dev.LIDs.GetPNForLID(ctx, jid); err == nil && !pn.IsEmpty() {
			return pn.ToNonAD()
		}
	}
	// Met by LID alone: this is their id from now on.
	if err := c.store.Write(ctx, func(tx *bridge.Tx) error {
		_, err := tx.Exec(`INSERT INTO whatsapp_lid_people (link, lid) VALUES (?, ?) ON CONFLICT DO NOTHING`, c.name, jid.String())
		return err
	}); err != nil {
		c.log.Warn("could not record a WhatsApp person known by LID; if their number comes later they may show as a second chat", "link", c.name, "lid", jid.String(), "err", err)
	}
	p.mu.Lock()
	p.lids[jid] = true
	p.mu.Unlock()
	return jid
}

// numberPaired notes, once a run, that pn is the number of lid, a LID
// person: routes naming the number are resolved again, and the number's
// chat, if it was one before the pair was known, merges into the LID's.
func (c *Connector) numberPaired(ctx context.Context, lid, pn types.JID) {
	p := &c.people
	p.mu.Lock()
	first := !p.aliased[lid]
	p.aliased[lid] = true
	p.mu.Unlock()
	if !first {
		return
	}
	// Routes that named the number name the LID's chat now.
	c.withSink(func(s bridge.Sink) { s.ChatsChanged() })
	c.numberSeen(ctx, lid, pn)
}

// numberSeen records that pn, the number of lid, a LID person, turned
// up, and the first time merges what was kept under the number into the
// LID's chat: now, through the core (mergeNumber), and should that not
// happen (a crash, a core that cannot), at the next start (moves.go).
func (c *Connector) numberSeen(ctx context.Context, lid, pn types.JID) {
	first := false
	err := c.store.Write(ctx, func(tx *bridge.Tx) error {
		first = false
		r, err := tx.Exec(`UPDATE whatsapp_lid_people SET number_seen = 1 WHERE link = ? AND lid = ? AND number_seen = 0`, c.name, lid.String())
		if err != nil {
			return err
		}
		if n, _ := r.RowsAffected(); n > 0 {
			first = true
			_, err = tx.Exec(`UPDATE whatsapp_links SET people_settled = 0 WHERE link = ?`, c.name)
		}
		return err
	})
	if err != nil {
		c.log.Warn("could not record that a LID person's number turned up; a chat under the number is not merged into theirs", "link", c.name, "lid", lid.String(), "err", err)
		return
	}
	if first {
		// Not on this goroutine: it may be the backfill's, holding the
		// turn mergeNumber takes, or whatsmeow's, which the move would
		// hold up while deliveries finish.
		c.spawn(func(ctx context.Context) { c.mergeNumber(ctx, lid, pn) })
	}
}

// mergeTimeout bounds a live merge: the sends in flight to the chats it
// moves finish first.
const mergeTimeout = 2 * time.Minute

// mergeNumber moves what was kept under pn, a LID person's number seen as
// a chat before WhatsApp told the pair, into the LID's chat, while the
// link runs (bridge.ChatMoveSink). The backfill waits meanwhile: it marks
// what it relayed under the chat id it read, which the move rewrites.
func (c *Connector) mergeNumber(ctx context.Context, lid, pn types.JID) {
	var live bridge.ChatMoveSink
	c.withSink(func(s bridge.Sink) { live, _ = s.(bridge.ChatMoveSink) })
	if live == nil {
		return // the next start merges (people_settled is 0)
	}
	c.history.turn.Lock()
	defer c.history.turn.Unlock()
	ctx, cancel := context.WithTimeout(ctx, mergeTimeout)
	defer cancel()
	c.people.settling.Store(false)
	if err := live.MoveChatsNow(ctx, []bridge.ChatMove{{From: pn.String(), To: lid.String()}}); err != nil {
		c.log.Warn("could not merge a person's chat under their number into their chat now; the next start does", "link", c.name, "lid", lid.String(), "err", err)
		return
	}
	c.log.Info("merged a person's chat under their number into their chat", "link", c.name, "lid", lid.String())
}

// loadPeople reads the people known by LID, once.
func (c *Connector) loadPeople(ctx context.Context) {
	p := &c.people
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.loaded {
		return
	}
	p.lids, p.aliased = map[types.JID]bool{}, map[types.JID]bool{}
	rows, err := c.store.QueryContext(ctx, `SELECT lid FROM whatsapp_lid_people WHERE link = ?`, c.name)
	if err != nil {
		c.log.Warn("could not read the WhatsApp people known by LID", "link", c.name, "err", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		if rows.Scan(&s) == nil {
			if j, err := types.ParseJID(s); err == nil {
				p.lids[j] = true
			}
		}
	}
	p.loaded = rows.Err() == nil
}

// forgetPeople drops what is known in memory, as when the link is
// unlinked (the table's rows go with the link's).
func (c *Connector) forgetPeople() {
	c.people.mu.Lock()
	c.people.loaded = false
	c.people.mu.Unlock()
}

// canonical is e with its chat and sender as their people's ids.
func (c *Connector) canonical(ctx context.Context, e *events.Message) *events.Message {
	n := *e
	n.Info.Chat = c.canonicalJID(ctx, e.Info.Chat)
	if sender := c.canonicalJID(ctx, e.Info.Sender); sender != e.Info.Sender.ToNonAD() {
		sender.Device = e.Info.Sender.Device
		n.Info.Sender = sender
	}
	return &n
}
