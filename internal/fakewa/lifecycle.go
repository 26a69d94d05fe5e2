package fakewa

import (
	"fmt"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
)

// RemoveCompanion is the phone's owner removing a linked device from the
// phone's list: its connection ends with WhatsApp's device_removed error,
// and it can never log in again.
func (p *Phone) RemoveCompanion(dev types.JID) error {
	s := p.srv
	s.mu.Lock()
	comp := p.companions[dev.Device]
	if comp == nil || comp.removed {
		s.mu.Unlock()
		return fmt.Errorf("%v is not a linked device of %s", dev, p.PN)
	}
	comp.removed = true
	delete(p.companions, comp.device)
	delete(s.companions, comp.JID())
	comp.pending = nil
	c := comp.conn
	s.mu.Unlock()
	if c != nil {
		c.closeAfter(waBinary.Node{Tag: "stream:error", Attrs: waBinary.Attrs{"code": "401"},
			Content: []waBinary.Node{{Tag: "conflict", Attrs: waBinary.Attrs{"type": "device_removed"}}}})
	}
	return nil
}

// Replace ends a device's connection as WhatsApp does when another client
// logs in with the same session ("replaced").
func (s *Server) Replace(dev types.JID) {
	s.mu.Lock()
	_, comp := s.device(dev)
	var c *conn
	if comp != nil {
		c = comp.conn
	}
	s.mu.Unlock()
	if c != nil {
		c.closeAfter(waBinary.Node{Tag: "stream:error", Content: []waBinary.Node{{Tag: "conflict", Attrs: waBinary.Attrs{"type": "replaced"}}}})
	}
}

// Online reports whether a device has a logged-in connection.
func (s *Server) Online(dev types.JID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, comp := s.device(dev)
	return comp != nil && comp.conn != nil && comp.conn.active
}

// groupNotification sends a w:gp2 notification about g to every companion
// of its members (and of extra accounts, such as those just removed);
// s.mu is held.
func (s *Server) groupNotification(g *Group, by *Phone, children []waBinary.Node, extra ...*Phone) {
	attrs := waBinary.Attrs{"from": g.JID, "type": "w:gp2", "t": s.clock().Unix()}
	if by != nil {
		attrs["participant"], attrs["notify"] = s.addressOf(g, by), by.PushName
		if g.LIDAddressing {
			attrs["participant_pn"] = by.PN
		}
		if g.LIDAddressing {
			attrs["addressing_mode"] = "lid"
		}
	}
	for _, m := range append(append([]*Phone(nil), g.members...), extra...) {
		for _, comp := range liveCompanions(m) {
			a := waBinary.Attrs{}
			for k, v := range attrs {
				a[k] = v
			}
			a["id"] = s.nextID()
			s.deliver(comp, "notification", waBinary.Node{Tag: "notification", Attrs: a, Content: children})
		}
	}
}

func (s *Server) participantNodes(g *Group, ps []*Phone) []waBinary.Node {
	var out []waBinary.Node
	for _, p := range ps {
		a := waBinary.Attrs{"jid": s.addressOf(g, p)}
		if g.LIDAddressing {
			a["phone_number"] = p.PN
		} else {
			a["lid"] = p.LID
		}
		out = append(out, waBinary.Node{Tag: "participant", Attrs: a})
	}
	return out
}

// AddMembers adds people to the group: members' companions hear of it,
// and the new members' companions learn of the group (JoinedGroup).
func (g *Group) AddMembers(s *Server, by *Phone, ps ...*Phone) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var added []*Phone
	for _, p := range ps {
		if !g.has(p) {
			g.members = append(g.members, p)
			added = append(added, p)
		}
	}
	old := g.members[:len(g.members)-len(added)]
	saved := g.members
	g.members = old
	s.groupNotification(g, by, []waBinary.Node{{Tag: "add", Content: s.participantNodes(g, added)}})
	g.members = saved
	create := []waBinary.Node{{Tag: "create", Attrs: waBinary.Attrs{"reason": "invite", "type": "new"}, Content: []waBinary.Node{s.groupNode(g)}}}
	for _, p := range added {
		for _, comp := range liveCompanions(p) {
			attrs := waBinary.Attrs{"from": g.JID, "type": "w:gp2", "t": s.clock().Unix(), "id": s.nextID()}
			if by != nil {
				attrs["participant"], attrs["notify"] = s.addressOf(g, by), by.PushName
			}
			s.deliver(comp, "notification", waBinary.Node{Tag: "notification", Attrs: attrs, Content: create})
		}
	}
}

// RemoveMembers takes people out of the group (by themselves: they left).
func (g *Group) RemoveMembers(s *Server, by *Phone, ps ...*Phone) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var removed []*Phone
	for _, p := range ps {
		for i, m := range g.members {
			if m == p {
				g.members = append(g.members[:i], g.members[i+1:]...)
				removed = append(removed, p)
				break
			}
		}
	}
	s.groupNotification(g, by, []waBinary.Node{{Tag: "remove", Content: s.participantNodes(g, removed)}}, removed...)
}

// SetSubject renames the group.
func (g *Group) SetSubject(s *Server, by *Phone, subject string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g.Subject = subject
	a := waBinary.Attrs{"subject": subject, "s_t": s.clock().Unix()}
	if by != nil {
		a["s_o"] = s.addressOf(g, by)
	}
	s.groupNotification(g, by, []waBinary.Node{{Tag: "subject", Attrs: a}})
}

// SetTopic changes the group's description.
func (g *Group) SetTopic(s *Server, by *Phone, topic string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g.Topic = topic
	s.groupNotification(g, by, []waBinary.Node{{Tag: "description", Attrs: waBinary.Attrs{"id": s.nextID()},
		Content: []waBinary.Node{{Tag: "body", Content: []byte(topic)}}}})
}

// Members lists the group's members.
func (g *Group) Members(s *Server) []*Phone {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Phone(nil), g.members...)
}
