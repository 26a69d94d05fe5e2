package fakewa

import (
	"bytes"
	"errors"
	"image/jpeg"
	"net/url"
	"strconv"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
)

// pictureState is the server's profile and group pictures; guarded by
// s.mu, its maps made at first use.
type pictureState struct {
	cur      map[types.JID]*picture // by account (phone-number JID) or group JID
	queries  map[types.JID]int      // picture queries per account or group
	hidden   map[*Phone]bool        // privacy "nobody": others get 401
	contacts map[*Phone]map[*Phone]bool
	lastID   int64
}

// picture is one profile picture, served plain on the picture host.
type picture struct {
	id    string
	data  []byte
	paths map[string]string // "image", "preview" → direct path
}

func (s *Server) picsLocked() *pictureState {
	p := &s.pics
	if p.cur == nil {
		p.cur = map[types.JID]*picture{}
		p.queries = map[types.JID]int{}
		p.hidden = map[*Phone]bool{}
		p.contacts = map[*Phone]map[*Phone]bool{}
	}
	return p
}

// pictureKeyLocked names whose picture a JID asks for, whatever the
// form: the account's phone-number JID, or the group; s.mu is held.
func (s *Server) pictureKeyLocked(j types.JID) types.JID {
	j = j.ToNonAD()
	if p := s.phoneOf(j); p != nil {
		return p.PN
	}
	return j
}

func init() {
	iqHandlers = append(iqHandlers, pictureIQ)
}

func pictureIQ(s *Server, c *conn, comp *companion, iq *waBinary.Node, xmlns, typ string, first waBinary.Node) bool {
	if xmlns != "w:profile:picture" {
		return false
	}
	target, ok := iq.Attrs["target"].(types.JID)
	switch {
	case !ok:
		c.send(iqError(iq, 400, "bad-request"))
	case typ == "get" && first.Tag == "picture":
		c.send(s.answerPicture(comp, iq, target, first))
	case typ == "set":
		c.send(s.clientSetsPicture(comp, iq, target, first))
	default:
		c.send(iqError(iq, 400, "bad-request"))
	}
	return true
}

// answerPicture is the answer to GetProfilePictureInfo: 404 when there is
// no picture (or no such user or group), 401 when it is hidden from the
// asker (a group it is not in, a user whose privacy says nobody), a
// "304" when the asker already has the current id, else where to fetch it.
func (s *Server) answerPicture(comp *companion, iq *waBinary.Node, target types.JID, q waBinary.Node) waBinary.Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	pics := s.picsLocked()
	key := s.pictureKeyLocked(target)
	pics.queries[key]++
	kind, _ := q.Attrs["type"].(string)
	if kind != "image" && kind != "preview" {
		return iqError(iq, 400, "bad-request")
	}
	if target.Server == types.GroupServer {
		g := s.groups[key]
		if g == nil {
			return iqError(iq, 404, "item-not-found")
		}
		if !g.has(comp.phone) {
			return iqError(iq, 401, "not-authorized")
		}
	} else {
		p := s.phoneOf(key)
		if p == nil {
			return iqError(iq, 404, "item-not-found")
		}
		if pics.hidden[p] && p != comp.phone {
			return iqError(iq, 401, "not-authorized")
		}
	}
	pic := pics.cur[key]
	if pic == nil {
		return iqError(iq, 404, "item-not-found")
	}
	if existing, _ := q.Attrs["id"].(string); existing == pic.id {
		return result(iq, waBinary.Node{Tag: "picture", Attrs: waBinary.Attrs{"status": "304"}})
	}
	dp := pic.paths[kind]
	return result(iq, waBinary.Node{Tag: "picture", Attrs: waBinary.Attrs{
		"id": pic.id, "type": kind, "url": "https://" + pictureHost + dp, "direct_path": dp,
	}})
}

// clientSetsPicture is a client changing a group's picture or its own
// account's (whatsmeow's SetGroupPhoto): members only, its own account
// only, and the picture must be a JPEG (406 otherwise, which whatsmeow
// reports as ErrInvalidImageFormat). No <picture> removes it.
func (s *Server) clientSetsPicture(comp *companion, iq *waBinary.Node, target types.JID, first waBinary.Node) waBinary.Node {
	var data []byte
	if first.Tag == "picture" {
		data, _ = first.Content.([]byte)
		if first.Attrs["type"] != "image" || len(data) == 0 {
			return iqError(iq, 400, "bad-request")
		}
		if _, err := jpeg.Decode(bytes.NewReader(data)); err != nil {
			return iqError(iq, 406, "not-acceptable")
		}
	} else if first.Tag != "" {
		return iqError(iq, 400, "bad-request")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := s.pictureKeyLocked(target)
	if target.Server == types.GroupServer {
		g := s.groups[key]
		if g == nil {
			return iqError(iq, 404, "item-not-found")
		}
		if !g.has(comp.phone) {
			return iqError(iq, 403, "forbidden")
		}
	} else if s.phoneOf(key) != comp.phone {
		return iqError(iq, 401, "not-authorized")
	}
	id := s.setPictureLocked(key, data, comp.phone, comp)
	if data == nil {
		return result(iq)
	}
	return result(iq, waBinary.Node{Tag: "picture", Attrs: waBinary.Attrs{"id": id}})
}

// SetPicture sets the account's profile picture as its phone does (nil
// removes it) and tells the linked devices of everyone who sees it; it
// returns the new picture id. The same bytes are served as the image and
// the preview.
func (p *Phone) SetPicture(data []byte) string {
	s := p.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setPictureLocked(p.PN, data, p, nil)
}

// SetPicture sets the group's picture (nil removes it), as changed by its
// creator, and tells the members' linked devices.
func (g *Group) SetPicture(data []byte) (string, error) {
	if g.Creator == nil {
		return "", errors.New("a group without members has no one to change its picture")
	}
	s := g.Creator.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setPictureLocked(g.JID, data, g.Creator, nil), nil
}

// HidePicture is the account's privacy setting for its profile picture:
// hidden, only its own devices may see it (others get 401).
func (p *Phone) HidePicture(hidden bool) {
	p.srv.mu.Lock()
	defer p.srv.mu.Unlock()
	p.srv.picsLocked().hidden[p] = hidden
}

// AddContact puts people in the account's address book, so that its
// linked devices hear when their pictures change (sharing a group does
// that too).
func (p *Phone) AddContact(others ...*Phone) {
	p.srv.mu.Lock()
	defer p.srv.mu.Unlock()
	pics := p.srv.picsLocked()
	if pics.contacts[p] == nil {
		pics.contacts[p] = map[*Phone]bool{}
	}
	for _, o := range others {
		pics.contacts[p][o] = true
	}
}

// Picture is the current picture of an account or group: its id and
// bytes, "" and nil when it has none.
func (s *Server) Picture(j types.JID) (string, []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pic := s.picsLocked().cur[s.pictureKeyLocked(j)]
	if pic == nil {
		return "", nil
	}
	return pic.id, pic.data
}

// PictureQueries is how many times clients asked for the picture of an
// account (by phone number or LID) or group.
func (s *Server) PictureQueries(j types.JID) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.picsLocked().queries[s.pictureKeyLocked(j)]
}

// setPictureLocked replaces key's picture (nil removes it): the old URLs
// stop working, and a picture notification goes to every linked device
// that sees it except skip, the device that made the change; s.mu is held.
func (s *Server) setPictureLocked(key types.JID, data []byte, author *Phone, skip *companion) string {
	pics := s.picsLocked()
	if old := pics.cur[key]; old != nil {
		for _, dp := range old.paths {
			if u, err := url.Parse(dp); err == nil {
				delete(s.media, u.Path)
			}
		}
		delete(pics.cur, key)
	}
	var id string
	if data != nil {
		// WhatsApp's picture ids are increasing numbers.
		next := max(pics.lastID+1, s.clock().Unix())
		pics.lastID = next
		id = strconv.FormatInt(next, 10)
		pic := &picture{id: id, data: append([]byte(nil), data...), paths: map[string]string{}}
		for _, kind := range []string{"image", "preview"} {
			pic.paths[kind] = s.storeBlobLocked(pictureHost, "t61.24694-24", "jpg", &mediaBlob{data: pic.data})
		}
		pics.cur[key] = pic
	}

	var audience []*Phone
	attrs := waBinary.Attrs{"type": "picture", "id": s.nextID(), "t": s.clock().Unix()}
	child := waBinary.Node{Tag: "set", Attrs: waBinary.Attrs{}}
	if data == nil {
		child.Tag = "delete"
	} else {
		child.Attrs["id"] = id
	}
	if g := s.groups[key]; key.Server == types.GroupServer && g != nil {
		audience = g.members
		attrs["from"], attrs["participant"] = g.JID, s.addressOf(g, author)
		child.Attrs["jid"], child.Attrs["author"] = g.JID, s.addressOf(g, author)
	} else if p := s.phoneOf(key); p != nil {
		audience = s.seersLocked(p)
		j := peerJID(p, s.opts.LIDAddressing)
		attrs["from"] = j
		child.Attrs["jid"], child.Attrs["author"] = j, j
	}
	n := waBinary.Node{Tag: "notification", Attrs: attrs, Content: []waBinary.Node{child}}
	for _, q := range audience {
		for _, comp := range liveCompanions(q) {
			if comp != skip {
				s.deliver(comp, "notification", n)
			}
		}
	}
	return id
}

// seersLocked lists the accounts that hear of p's picture changes: p
// itself, those with p in their address book and those sharing a group
// with p; s.mu is held.
func (s *Server) seersLocked(p *Phone) []*Phone {
	pics := s.picsLocked()
	var out []*Phone
	for _, q := range s.phones {
		shares := q == p || pics.contacts[q][p]
		for _, g := range s.groups {
			if shares {
				break
			}
			shares = g.has(p) && g.has(q)
		}
		if shares {
			out = append(out, q)
		}
	}
	return out
}
