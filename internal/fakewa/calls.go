package fakewa

import (
	"fmt"

	waBinary "go.mau.fi/whatsmeow/binary"
)

// What WhatsApp gives linked devices instead of the real thing: calls
// ring only on phones, and view-once media stays on them.

// Call rings to's account from p as WhatsApp does: to's linked devices
// each get a <call> offer (the phone would ring). It returns the call id.
func (p *Phone) Call(to *Phone, video bool) string {
	id := NewMessageID()
	media := waBinary.Node{Tag: "audio", Attrs: waBinary.Attrs{"enc": "opus", "rate": "16000"}}
	if video {
		media = waBinary.Node{Tag: "video", Attrs: waBinary.Attrs{"enc": "vp8"}}
	}
	s := p.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, comp := range liveCompanions(to) {
		offer := waBinary.Node{Tag: "offer", Attrs: waBinary.Attrs{"call-id": id, "call-creator": p.PN}, Content: []waBinary.Node{media}}
		s.deliver(comp, "call", waBinary.Node{Tag: "call", Attrs: waBinary.Attrs{
			"id": NewMessageID(), "from": p.PN, "t": s.clock().Unix(), "platform": p.platform(), "version": "2.24.1",
		}, Content: []waBinary.Node{offer}})
	}
	return id
}

// SendViewOnce sends to a view-once photo from p: to's phone has it,
// and its linked devices get only word that one came (an <unavailable
// type="view_once"> message), as WhatsApp does. It returns the id.
func (p *Phone) SendViewOnce(to *Phone) (string, error) {
	if to == p {
		return "", fmt.Errorf("a view-once message to oneself")
	}
	id := NewMessageID()
	s := p.srv
	s.mu.Lock()
	at := s.clock()
	s.mu.Unlock()
	to.inbox.push(Message{ID: id, Chat: p.PN, From: p.PN, Time: at})
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, comp := range liveCompanions(to) {
		attrs := waBinary.Attrs{"id": id, "t": at.Unix(), "type": "media", "notify": p.PushName}
		p.senderAttrs(attrs)
		s.deliver(comp, "message", waBinary.Node{Tag: "message", Attrs: attrs,
			Content: []waBinary.Node{{Tag: "unavailable", Attrs: waBinary.Attrs{"type": "view_once"}}}})
	}
	return id, nil
}

// platform is what the phone says it runs, for call stanzas.
func (p *Phone) platform() string {
	if p.Platform != "" {
		return p.Platform
	}
	return "android"
}
