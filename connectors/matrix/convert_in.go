package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"
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
			if !parseLenient(evt) {
				return nil, false
			}
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
		if evt.Type == event.EventSticker {
			// A sticker is an image whatever its content says.
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
			if newContent.MsgType == event.MsgLocation {
				// A live location that moved.
				raw, _ := evt.Content.Raw["m.new_content"].(map[string]any)
				if loc, caption, ok := locationOf(newContent, raw); ok {
					loc.Live = true // only a live location moves
					ev.Location, ev.Text = loc, caption
					return ev, true
				}
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
			m := mediaOf(evt.Type, msg, evt.Content.Raw)
			ev.Text = m.Caption
			if m.Caption != "" {
				ev.HTML = normalizeHTML(msg.GetFormattedCaption())
			}
			ev.Media = []bridge.Media{m}
			return ev, true
		}
		ev.Text, ev.HTML = messageText(msg)
		if msg.Format == event.FormatHTML {
			ev.Mentions = pillsOf(msg.FormattedBody, ev.Text)
		}
		if msg.MsgType == event.MsgLocation {
			if loc, caption, ok := locationOf(msg, evt.Content.Raw); ok {
				ev.Location = loc
				if caption != strings.TrimSpace(ev.Text) {
					ev.HTML = "" // it still shows what was taken out
				}
				ev.Text = caption
				return ev, true
			}
			// Not a place on Earth: the text, with the URI, says what it can.
			if msg.GeoURI != "" && !strings.Contains(ev.Text, msg.GeoURI) {
				ev.Text = strings.TrimSpace(ev.Text + " " + msg.GeoURI)
			}
		}
		return ev, ev.Text != ""

	case event.EventUnstablePollStart:
		ev.Kind = bridge.KindMessage
		poll, fallback, ok := pollOf(evt.Content.Raw)
		if !ok {
			ev.Text = strings.TrimSpace(fallback)
			return ev, ev.Text != ""
		}
		ev.Poll = poll
		if rel, _ := evt.Content.Raw["m.relates_to"].(map[string]any); rel != nil {
			if reply, _ := rel["m.in_reply_to"].(map[string]any); reply != nil {
				ev.ReplyTo, _ = reply["event_id"].(string)
			}
		}
		return ev, true

	case event.EventUnstablePollResponse:
		// The choices need the poll's answers: readVote fills them in.
		poll, _, ok := responseOf(evt.Content.Raw)
		ev.Kind, ev.Target = bridge.KindVote, poll
		return ev, ok

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

// Keys of the content that mautrix's types lack, or type too strictly
// to be read leniently: they are read from and written to the raw JSON.
const (
	keyVoice       = "org.matrix.msc3245.voice"
	keyVoiceLegacy = "org.matrix.msc2516.voice"
	keyAudio       = "org.matrix.msc1767.audio"
	keyLocation    = "org.matrix.msc3488.location"
	keyAsset       = "org.matrix.msc3488.asset"
	keyLocationTS  = "org.matrix.msc3488.ts"
	keyGIF         = "fi.mau.gif"
	keyLoop        = "fi.mau.loop"
	keyAutoplay    = "fi.mau.autoplay"
	keyHideControl = "fi.mau.hide_controls"
	keyNoAudio     = "fi.mau.no_audio"
)

// lenientKeys are read from the raw content only: one a client got wrong
// (a waveform of fractions) must not cost the message its file or text.
var lenientKeys = []string{keyVoice, keyVoiceLegacy, keyAudio}

// parseLenient parses a message whose strict parse failed again without
// lenientKeys; false if that fails too.
func parseLenient(evt *event.Event) bool {
	if evt.Type != event.EventMessage && evt.Type != event.EventSticker || evt.Content.Raw == nil {
		return false
	}
	rest := make(map[string]any, len(evt.Content.Raw))
	dropped := false
	for k, v := range evt.Content.Raw {
		if slices.Contains(lenientKeys, k) {
			dropped = true
			continue
		}
		rest[k] = v
	}
	if !dropped {
		return false
	}
	b, err := json.Marshal(rest)
	if err != nil {
		return false
	}
	c := event.Content{VeryRaw: b}
	if c.ParseRaw(evt.Type) != nil {
		return false
	}
	evt.Content.Parsed = c.Parsed
	return true
}

// Bounds on what a sender says of a file: beyond them it is nonsense, and
// a huge number would overflow on its way to an int.
const (
	maxPixels     = 1 << 20
	maxDurationMS = 1 << 40 // some 35 years
	// maxWaveform bounds a voice note's samples (Element sends about a
	// hundred); longer ones are squeezed to this many.
	maxWaveform = 1024
	// maxSample is the loudest sample in MSC1767's waveform.
	maxSample = 1024
)

// mediaOf is the attachment of a media message or sticker: its file,
// size and length, and how clients show it (a voice note, a sticker, a
// GIF).
func mediaOf(typ event.Type, msg *event.MessageEventContent, raw map[string]any) bridge.Media {
	m := bridge.Media{Name: msg.GetFileName(), Ref: string(msg.URL)}
	if msg.Info != nil {
		m.MIME = msg.Info.MimeType
		m.Size = within(int64(msg.Info.Size), 1<<62)
		m.Width = int(within(int64(msg.Info.Width), maxPixels))
		m.Height = int(within(int64(msg.Info.Height), maxPixels))
		m.DurationMS = within(int64(msg.Info.Duration), maxDurationMS)
	}
	if m.MIME == "" {
		m.MIME = defaultMIME(msg.MsgType)
	}
	m.Caption = msg.GetCaption()
	info, _ := raw["info"].(map[string]any)
	switch {
	case typ == event.EventSticker:
		m.Kind = bridge.MediaSticker
	case msg.MsgType == event.MsgAudio && (raw[keyVoice] != nil || raw[keyVoiceLegacy] != nil):
		m.Kind = bridge.MediaVoice
		audio, _ := raw[keyAudio].(map[string]any)
		if m.DurationMS == 0 {
			m.DurationMS = durationOf(audio["duration"])
		}
		m.Waveform = waveformOf(audio["waveform"])
	case msg.MsgType == event.MsgVideo && (isTrue(info[keyGIF]) || isTrue(info[keyLoop])),
		msg.MsgType == event.MsgImage && (isTrue(info[keyGIF]) || strings.EqualFold(m.MIME, "image/gif")):
		// mautrix bridges mark a GIF, which most chat apps send as a
		// silent looping video, so; a plain GIF image is one too.
		m.Kind = bridge.MediaGIF
	}
	return m
}

// within is n where 0 < n <= max, else 0 (unknown).
func within(n, max int64) int64 {
	if n <= 0 || n > max {
		return 0
	}
	return n
}

// durationOf is a JSON number of milliseconds, 0 if v is none or out of
// range.
func durationOf(v any) int64 {
	f, ok := v.(float64)
	if !ok || math.IsNaN(f) || f < 1 || f > maxDurationMS {
		return 0
	}
	return int64(math.Round(f))
}

func isTrue(v any) bool {
	b, _ := v.(bool)
	return b
}

// waveformOf reads MSC1767's waveform: samples 0 to 1024, clamped (some
// clients overshoot), squeezed to maxWaveform samples; nil if it holds
// anything but numbers.
func waveformOf(v any) []int {
	list, _ := v.([]any)
	if len(list) == 0 {
		return nil
	}
	samples := make([]int, len(list))
	for i, x := range list {
		f, ok := x.(float64)
		if !ok || math.IsNaN(f) {
			return nil
		}
		samples[i] = int(math.Round(max(0, min(f, maxSample))))
	}
	return fitWaveform(samples)
}

// fitWaveform is samples clamped to 0..maxSample and squeezed to
// maxWaveform samples, each the loudest of its stretch; samples itself
// is left as it is.
func fitWaveform(samples []int) []int {
	if len(samples) == 0 {
		return nil
	}
	n := min(len(samples), maxWaveform)
	out := make([]int, n)
	for i := range out {
		from, to := i*len(samples)/n, (i+1)*len(samples)/n
		out[i] = max(0, min(slices.Max(samples[from:to]), maxSample))
	}
	return out
}

// locationOf reads an m.location: the place from geo_uri, or else from
// MSC3488's uri; its description (MSC3488) as the place's name; and what
// the body says besides the URI as the caption. False when neither URI
// is a place on Earth.
func locationOf(msg *event.MessageEventContent, raw map[string]any) (*bridge.Location, string, bool) {
	ext, _ := raw[keyLocation].(map[string]any)
	extURI, _ := ext["uri"].(string)
	uri := msg.GeoURI
	loc, ok := parseGeoURI(uri)
	if !ok {
		uri = extURI
		if loc, ok = parseGeoURI(uri); !ok {
			return nil, "", false
		}
	}
	desc, _ := ext["description"].(string)
	loc.Name = strings.TrimSpace(desc)
	return loc, locationCaption(msg.Body, loc, msg.GeoURI, extURI), true
}

// locationCaption is what body says besides the location loc: without
// its URIs (however written) and its name, and nothing for the text
// Element makes up ("User Location "Home" geo:… at 2024-…").
func locationCaption(body string, loc *bridge.Location, uris ...string) string {
	body = strings.TrimSpace(body)
	desc := loc.Name
	if generatedLocationText(body, desc, uris) {
		return ""
	}
	for _, u := range uris {
		if u = strings.TrimSpace(u); u != "" {
			body = strings.ReplaceAll(body, u, "")
		}
	}
	for _, word := range strings.Fields(body) {
		if same, ok := parseGeoURI(word); ok && same.Latitude == loc.Latitude && same.Longitude == loc.Longitude {
			body = strings.ReplaceAll(body, word, "")
		}
	}
	var lines []string
	for _, line := range strings.Split(body, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			lines = append(lines, line)
		}
	}
	caption := strings.Join(lines, "\n")
	if caption == desc || caption == `"`+desc+`"` {
		return ""
	}
	return caption
}

// generatedLocationText reports whether body is the fallback Element
// writes for a location: [User ]Location ["description"] URI [at TIME].
func generatedLocationText(body, desc string, uris []string) bool {
	s, ok := strings.CutPrefix(strings.TrimPrefix(body, "User "), "Location")
	if !ok {
		return false
	}
	s = strings.TrimSpace(s)
	if desc != "" {
		s = strings.TrimSpace(strings.TrimPrefix(s, `"`+desc+`"`))
	}
	cut := false
	for _, u := range uris {
		if u = strings.TrimSpace(u); u != "" && strings.HasPrefix(s, u) {
			s, cut = strings.TrimSpace(s[len(u):]), true
			break
		}
	}
	if !cut {
		return false
	}
	if s == "" {
		return true
	}
	at, ok := strings.CutPrefix(s, "at ")
	if !ok {
		return false
	}
	_, err := time.Parse(time.RFC3339, at)
	return err == nil
}

// parseGeoURI reads a geo URI (RFC 5870): geo:LAT,LON[,ALT] and
// parameters; false for anything else, a coordinate system other than
// WGS-84, or a place off Earth.
func parseGeoURI(s string) (*bridge.Location, bool) {
	s = strings.TrimSpace(s)
	if len(s) < 4 || !strings.EqualFold(s[:4], "geo:") {
		return nil, false
	}
	coords, params, _ := strings.Cut(s[4:], ";")
	for _, p := range strings.Split(params, ";") {
		k, v, _ := strings.Cut(p, "=")
		if strings.EqualFold(strings.TrimSpace(k), "crs") && !strings.EqualFold(strings.TrimSpace(v), "wgs84") {
			return nil, false
		}
	}
	parts := strings.Split(coords, ",")
	if len(parts) != 2 && len(parts) != 3 {
		return nil, false
	}
	var xs [3]float64
	for i, p := range parts {
		x, ok := geoNumber(p)
		if !ok {
			return nil, false
		}
		xs[i] = x
	}
	loc := &bridge.Location{Latitude: xs[0], Longitude: xs[1]}
	return loc, loc.Valid()
}

// geoNumber reads RFC 5870's num: [-]DIGITS[.DIGITS]; strconv alone
// would take "NaN", "Inf", exponents and hex too.
func geoNumber(s string) (float64, bool) {
	s = strings.TrimSpace(s)
	digits := strings.TrimPrefix(strings.TrimPrefix(s, "-"), "+")
	whole, frac, dot := strings.Cut(digits, ".")
	if !allDigits(whole) || dot && !allDigits(frac) {
		return 0, false
	}
	x, err := strconv.ParseFloat(s, 64)
	return x, err == nil
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
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
// typing for each user who started or stopped (Matrix lists who types
// now), read for each user's receipt. The bot's own are left out.
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
		var started, stopped []id.UserID
		for u := range now {
			if !before[u] && u != c.self {
				started = append(started, u)
			}
		}
		for u := range before {
			if !now[u] && u != c.self {
				stopped = append(stopped, u)
			}
		}
		slices.Sort(started)
		slices.Sort(stopped)
		for i, users := range [][]id.UserID{started, stopped} {
			for _, u := range users {
				out = append(out, &bridge.Event{Kind: bridge.KindTyping, Chat: bridge.ChatRef{ID: string(room)},
					Sender: bridge.Sender{ID: string(u), Name: u.Localpart()}, Time: time.Now(), StoppedTyping: i == 1})
			}
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
