package fakewa

import (
	"fmt"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
)

// Typing and reading, as WhatsApp relays them between accounts: a chat
// state (typing) goes only to linked devices online that announced
// <presence type="available"/> on their connection, and is never queued;
// a read receipt goes to every device of the message's sender, and of the
// reader, through the offline queue.

// announced records a device's own presence (available or unavailable)
// for its connection c.
func (s *Server) announced(c *conn, n *waBinary.Node) {
	typ, _ := n.Attrs["type"].(string)
	if typ != "available" && typ != "unavailable" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if comp := c.comp; comp != nil && comp.conn == c {
		comp.presence = typ
	}
}

// PresenceOf is what a device last announced of itself on its current
// connection, or its last one if it is offline: "" (nothing yet),
// "available" or "unavailable".
func (s *Server) PresenceOf(dev types.JID) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, comp := s.device(dev); comp != nil {
		return comp.presence
	}
	return ""
}

// SendChatState has the phone's owner start (types.ChatPresenceComposing)
// or stop (types.ChatPresencePaused) typing in a chat: a person (either
// form of their JID) or a group. It returns how many linked devices it
// reached: WhatsApp gives a chat state only to those online and
// available now; the others never learn of it.
func (p *Phone) SendChatState(to types.JID, state types.ChatPresence) (int, error) {
	s := p.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	var comps []*companion
	attrs := waBinary.Attrs{}
	if to.Server == types.GroupServer {
		g := s.groups[to]
		if g == nil || !g.has(p) {
			return 0, fmt.Errorf("%s is not a member of %s", p.PN, to)
		}
		for _, m := range g.members {
			if m != p {
				comps = append(comps, liveCompanions(m)...)
			}
		}
		attrs["from"] = g.JID
		p.participantAttrs(g, attrs)
	} else {
		peer := s.phoneOf(to.ToNonAD())
		if peer == nil {
			return 0, fmt.Errorf("%s is not on WhatsApp", to)
		}
		comps = liveCompanions(peer)
		p.senderAttrs(attrs)
	}
	reached := 0
	for _, comp := range comps {
		c := comp.conn
		if c == nil || !c.active || comp.presence != "available" {
			continue
		}
		n := waBinary.Node{Tag: "chatstate", Attrs: copyAttrs(attrs), Content: []waBinary.Node{{Tag: string(state)}}}
		c.outq.push(outgoing{node: n})
		reached++
	}
	return reached, nil
}

// Read marks messages the phone received as read, as its owner opening
// the chat does. Every device of each message's sender gets a read
// receipt, and so do the phone's own linked devices (WhatsApp keeps an
// account's devices in step): one receipt per chat and sender, naming
// the ids in the order given.
func (p *Phone) Read(ids ...string) error {
	type key struct {
		sender *Phone
		chat   types.JID
	}
	var order []key
	byKey := map[key][]string{}
	for _, id := range ids {
		m, ok := p.received(id)
		if !ok {
			return fmt.Errorf("%s received no message %s from another account", p.PN, id)
		}
		s := p.srv
		s.mu.Lock()
		sender := s.phoneOf(m.From.ToNonAD())
		s.mu.Unlock()
		if sender == nil {
			return fmt.Errorf("the sender %s of %s is not on WhatsApp", m.From, id)
		}
		k := key{sender, m.Chat}
		if _, seen := byKey[k]; !seen {
			order = append(order, k)
		}
		byKey[k] = append(byKey[k], id)
	}
	s := p.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range order {
		kids := byKey[k]
		base := waBinary.Attrs{"id": kids[0], "t": s.clock().Unix(), "type": "read"}
		var content []waBinary.Node
		if len(kids) > 1 {
			var items []waBinary.Node
			for _, id := range kids[1:] {
				items = append(items, waBinary.Node{Tag: "item", Attrs: waBinary.Attrs{"id": id}})
			}
			content = []waBinary.Node{{Tag: "list", Content: items}}
		}
		// To the sender: from the reader. To the reader's own devices:
		// from the reader too, with the chat as the recipient.
		toSender, toOwn := copyAttrs(base), copyAttrs(base)
		if g := s.groups[k.chat]; k.chat.Server == types.GroupServer && g != nil {
			toSender["from"], toOwn["from"] = g.JID, g.JID
			p.participantAttrs(g, toSender)
			p.participantAttrs(g, toOwn)
		} else {
			p.senderAttrs(toSender)
			if s.opts.LIDAddressing {
				toOwn["from"], toOwn["recipient"], toOwn["peer_recipient_pn"] = p.LID, k.sender.LID, k.sender.PN
			} else {
				toOwn["from"], toOwn["recipient"], toOwn["peer_recipient_lid"] = p.PN, k.sender.PN, k.sender.LID
			}
		}
		for _, comp := range liveCompanions(k.sender) {
			s.deliver(comp, "receipt", waBinary.Node{Tag: "receipt", Attrs: copyAttrs(toSender), Content: content})
		}
		for _, comp := range liveCompanions(p) {
			s.deliver(comp, "receipt", waBinary.Node{Tag: "receipt", Attrs: copyAttrs(toOwn), Content: content})
		}
	}
	return nil
}

// received finds a message the phone got from another account.
func (p *Phone) received(id string) (Message, bool) {
	for _, m := range p.inbox.all() {
		if m.ID == id && !m.FromMe && m.Err == nil {
			return m, true
		}
	}
	return Message{}, false
}

// participantAttrs is how the phone appears as a group's participant, by
// the group's addressing; s.mu is held.
func (p *Phone) participantAttrs(g *Group, attrs waBinary.Attrs) {
	if g.LIDAddressing {
		attrs["participant"], attrs["addressing_mode"] = p.LID, "lid"
		if !p.numberHidden.Load() {
			attrs["participant_pn"] = p.PN
		}
	} else {
		attrs["participant"], attrs["participant_lid"] = p.PN, p.LID
	}
}

func copyAttrs(a waBinary.Attrs) waBinary.Attrs {
	out := make(waBinary.Attrs, len(a))
	for k, v := range a {
		out[k] = v
	}
	return out
}
