package matrix

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
)

// convertEvent turns a Matrix timeline event into a neutral one; false for
// what is not relayed (state, unknown types, encrypted or empty content).
// Sender.Name and Chat.Name are left for the caller, which knows the room.
func convertEvent(evt *event.Event) (*bridge.Event, bool) {
	if evt.StateKey != nil {
		return nil, false
	}
	if evt.Content.Parsed == nil {
		if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrContentAlreadyParsed) {
			return nil, false
		}
	}
	ev := &bridge.Event{
		Chat:   bridge.ChatRef{ID: string(evt.RoomID)},
		ID:     string(evt.ID),
		Sender: bridge.Sender{ID: string(evt.Sender), Name: evt.Sender.Localpart()},
		Time:   time.UnixMilli(evt.Timestamp),
	}
	switch evt.Type {
	case event.EventMessage, event.EventSticker:
		msg, ok := evt.Content.Parsed.(*event.MessageEventContent)
		if !ok {
			return nil, false
		}
		if msg.MsgType == "" && evt.Type == event.EventSticker {
			msg.MsgType = event.MsgImage
		}
		if target := msg.RelatesTo.GetReplaceID(); target != "" {
			ev.Kind = bridge.KindEdit
			ev.Target = string(target)
			newContent := msg.NewContent
			if newContent == nil {
				// No m.new_content: the fallback is all there is.
				newContent = msg
				newContent.Body = strings.TrimPrefix(newContent.Body, "* ")
				newContent.FormattedBody = strings.TrimPrefix(newContent.FormattedBody, "* ")
			}
			ev.Text, ev.HTML = messageText(newContent)
			return ev, ev.Text != ""
		}
		ev.Kind = bridge.KindMessage
		ev.ReplyTo = string(msg.RelatesTo.GetReplyTo())
		if ev.ReplyTo != "" {
			msg.Body = event.TrimReplyFallbackText(msg.Body)
			msg.FormattedBody = event.TrimReplyFallbackHTML(msg.FormattedBody)
		}
		ev.Emote = msg.MsgType == event.MsgEmote
		ev.Notice = msg.MsgType == event.MsgNotice
		if msg.MsgType.IsMedia() {
			if msg.URL == "" {
				return nil, false // encrypted media: nothing to open
			}
			m := bridge.Media{Name: msg.GetFileName(), Ref: string(msg.URL)}
			if msg.Info != nil {
				m.MIME = msg.Info.MimeType
				m.Size = int64(msg.Info.Size)
			}
			if m.MIME == "" {
				m.MIME = defaultMIME(msg.MsgType)
			}
			m.Caption = msg.GetCaption()
			ev.Text = m.Caption
			if m.Caption != "" {
				ev.HTML = normalizeHTML(msg.GetFormattedCaption())
			}
			ev.Media = []bridge.Media{m}
			return ev, true
		}
		ev.Text, ev.HTML = messageText(msg)
		if msg.MsgType == event.MsgLocation && msg.GeoURI != "" && !strings.Contains(ev.Text, msg.GeoURI) {
			ev.Text = strings.TrimSpace(ev.Text + " " + msg.GeoURI)
		}
		return ev, ev.Text != ""

	case event.EventReaction:
		rel := evt.Content.AsReaction().RelatesTo
		if rel.Type != event.RelAnnotation || rel.EventID == "" || rel.Key == "" {
			return nil, false
		}
		ev.Kind = bridge.KindReaction
		ev.Target = string(rel.EventID)
		ev.Emoji = rel.Key
		return ev, true

	case event.EventRedaction:
		// The core turns the deletion of a reaction into its removal.
		target := evt.Redacts
		if target == "" {
			target = evt.Content.AsRedaction().Redacts
		}
		if target == "" {
			return nil, false
		}
		ev.Kind = bridge.KindDelete
		ev.Target = string(target)
		return ev, true
	}
	return nil, false
}

// messageText is a message's plain text and, where it is formatted, its
// HTML in the core's subset.
func messageText(msg *event.MessageEventContent) (text, htmlText string) {
	text = msg.Body
	if msg.Format == event.FormatHTML && msg.FormattedBody != "" {
		htmlText = normalizeHTML(msg.FormattedBody)
	}
	return text, htmlText
}

func defaultMIME(t event.MessageType) string {
	switch t {
	case event.MsgImage:
		return "image/jpeg"
	case event.MsgVideo:
		return "video/mp4"
	case event.MsgAudio:
		return "audio/ogg"
	}
	return "application/octet-stream"
}

// The core's HTML subset, and what Matrix clients write for the same.
var htmlTags = map[string]string{
	"b": "b", "strong": "b", "i": "i", "em": "i", "s": "s", "del": "s", "strike": "s",
	"u": "u", "ins": "u", "code": "code", "pre": "pre", "a": "a", "blockquote": "blockquote",
	"br": "br", "p": "p", "ul": "ul", "ol": "ol", "li": "li",
}

// normalizeHTML rewrites Matrix HTML into the core's subset: known tags
// kept (under their plain names), links kept only to safe schemes, reply
// fallbacks and scripts dropped, other tags replaced by their content.
func normalizeHTML(s string) string {
	if s == "" {
		return ""
	}
	nodes, err := html.ParseFragment(strings.NewReader(s), &html.Node{Type: html.ElementNode, Data: "body", DataAtom: atom.Body})
	if err != nil {
		return html.EscapeString(s)
	}
	var b strings.Builder
	for _, n := range nodes {
		writeHTML(&b, n)
	}
	return strings.TrimSpace(b.String())
}

func writeHTML(b *strings.Builder, n *html.Node) {
	switch n.Type {
	case html.TextNode:
		b.WriteString(html.EscapeString(n.Data))
		return
	case html.ElementNode:
	default:
		for ch := n.FirstChild; ch != nil; ch = ch.NextSibling {
			writeHTML(b, ch)
		}
		return
	}
	switch n.Data {
	case "mx-reply", "script", "style", "head", "title":
		return
	case "img":
		// Custom emoji and inline images: their alt text stands in.
		b.WriteString(html.EscapeString(attr(n, "alt")))
		return
	case "h1", "h2", "h3", "h4", "h5", "h6":
		b.WriteString("<p><b>")
		writeChildren(b, n)
		b.WriteString("</b></p>")
		return
	}
	tag, ok := htmlTags[n.Data]
	if tag == "a" && !safeLink(attr(n, "href")) {
		ok = false
	}
	switch {
	case !ok:
		writeChildren(b, n)
		if n.Data == "div" || n.Data == "tr" {
			b.WriteString("<br>")
		}
	case tag == "br":
		b.WriteString("<br>")
	case tag == "a":
		b.WriteString(`<a href="` + html.EscapeString(attr(n, "href")) + `">`)
		writeChildren(b, n)
		b.WriteString("</a>")
	default:
		b.WriteString("<" + tag + ">")
		writeChildren(b, n)
		b.WriteString("</" + tag + ">")
	}
}

func writeChildren(b *strings.Builder, n *html.Node) {
	for ch := n.FirstChild; ch != nil; ch = ch.NextSibling {
		writeHTML(b, ch)
	}
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func safeLink(href string) bool {
	h := strings.ToLower(strings.TrimSpace(href))
	return strings.HasPrefix(h, "https://") || strings.HasPrefix(h, "http://") || strings.HasPrefix(h, "mailto:")
}

// convertEphemeral turns typing and read receipts in room into events:
// typing for each user who started (Matrix lists who types now), read for
// each user's receipt. The bot's own are left out.
func (c *Connector) convertEphemeral(evt *event.Event) []*bridge.Event {
	if evt.Content.Parsed == nil {
		if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrContentAlreadyParsed) {
			return nil
		}
	}
	room := evt.RoomID
	var out []*bridge.Event
	switch evt.Type {
	case event.EphemeralEventTyping:
		now := map[id.UserID]bool{}
		for _, u := range evt.Content.AsTyping().UserIDs {
			now[u] = true
		}
		c.mu.Lock()
		before := c.typing[room]
		c.typing[room] = now
		c.mu.Unlock()
		var started []id.UserID
		for u := range now {
			if !before[u] && u != c.self {
				started = append(started, u)
			}
		}
		slices.Sort(started)
		for _, u := range started {
			out = append(out, &bridge.Event{Kind: bridge.KindTyping, Chat: bridge.ChatRef{ID: string(room)},
				Sender: bridge.Sender{ID: string(u), Name: u.Localpart()}, Time: time.Now()})
		}
	case event.EphemeralEventReceipt:
		receipts := *evt.Content.AsReceipt()
		targets := make([]id.EventID, 0, len(receipts))
		for target := range receipts {
			targets = append(targets, target)
		}
		slices.Sort(targets)
		for _, target := range targets {
			readers := receipts[target][event.ReceiptTypeRead]
			users := make([]id.UserID, 0, len(readers))
			for u := range readers {
				users = append(users, u)
			}
			slices.Sort(users)
			for _, u := range users {
				if u == c.self {
					continue
				}
				at := readers[u].Timestamp
				if at.IsZero() {
					at = time.Now()
				}
				out = append(out, &bridge.Event{Kind: bridge.KindRead, Chat: bridge.ChatRef{ID: string(room)},
					Sender: bridge.Sender{ID: string(u), Name: u.Localpart()}, Target: string(target), Time: at})
			}
		}
	}
	return out
}

// roomCache knows rooms' names and members' display names, from /sync
// and, for what it has not seen, from the room's state.
type roomCache struct {
	mu    sync.Mutex
	rooms map[id.RoomID]*roomInfo
}

type roomInfo struct {
	name      string
	nameKnown bool
	members   map[id.UserID]string
}

func newRoomCache() roomCache { return roomCache{rooms: map[id.RoomID]*roomInfo{}} }

func (rc *roomCache) infoLocked(room id.RoomID) *roomInfo {
	ri := rc.rooms[room]
	if ri == nil {
		ri = &roomInfo{members: map[id.UserID]string{}}
		rc.rooms[room] = ri
	}
	return ri
}

// learn takes names from state events.
func (rc *roomCache) learn(room id.RoomID, events []*event.Event) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, evt := range events {
		if evt.StateKey == nil {
			continue
		}
		switch evt.Type {
		case event.StateRoomName:
			ri := rc.infoLocked(room)
			ri.name, _ = evt.Content.Raw["name"].(string)
			ri.nameKnown = true
		case event.StateMember:
			ri := rc.infoLocked(room)
			user := id.UserID(*evt.StateKey)
			name, _ := evt.Content.Raw["displayname"].(string)
			if name == "" {
				name = user.Localpart()
			}
			ri.members[user] = name
		}
	}
}

// stateTimeout bounds a look-up of one state event.
const stateTimeout = 10 * time.Second

// memberName is user's display name in room, else their localpart.
func (rc *roomCache) memberName(ctx context.Context, cli *mautrix.Client, room id.RoomID, user id.UserID) string {
	rc.mu.Lock()
	name, ok := rc.infoLocked(room).members[user]
	rc.mu.Unlock()
	if ok {
		return name
	}
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	var member event.MemberEventContent
	err := cli.StateEvent(ctx, room, event.StateMember, string(user), &member)
	name = member.Displayname
	if name == "" {
		name = user.Localpart()
	}
	if err == nil || isDefinite(err) {
		rc.mu.Lock()
		rc.infoLocked(room).members[user] = name
		rc.mu.Unlock()
	}
	return name
}

// roomName is room's name, "" when it has none.
func (rc *roomCache) roomName(ctx context.Context, cli *mautrix.Client, room id.RoomID) string {
	rc.mu.Lock()
	ri := rc.infoLocked(room)
	name, known := ri.name, ri.nameKnown
	rc.mu.Unlock()
	if known {
		return name
	}
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	var content event.RoomNameEventContent
	err := cli.StateEvent(ctx, room, event.StateRoomName, "", &content)
	if err == nil || isDefinite(err) {
		rc.mu.Lock()
		ri.name, ri.nameKnown = content.Name, true
		rc.mu.Unlock()
	}
	return content.Name
}
