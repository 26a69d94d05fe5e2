package matrix

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"maps"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
)

// keyField carries the delivery key in every event the bridge sends, so
// a retry after an unanswered request can find what already arrived
// (homeservers keep transaction ids only for a while, Dendrite only in
// memory).
const keyField = "com.github.phonebridge.key"

// senderName is who an outgoing event speaks for.
func senderName(s bridge.Sender) string {
	switch {
	case s.Name != "":
		return s.Name
	case s.ID != "":
		return s.ID
	}
	return "someone"
}

// senderPrefix renders format ({name} = the sender's name, HTML-escaped)
// as HTML and as plain text. Rendering HTML as text takes a parse, and
// the same few senders speak again and again: renders are kept.
func senderPrefix(format, name string) (plain, htmlText string) {
	k := prefixKey{format, name}
	prefixes.Lock()
	p, ok := prefixes.m[k]
	prefixes.Unlock()
	if ok {
		return p[0], p[1]
	}
	plain, htmlText = renderPrefix(format, name)
	prefixes.Lock()
	if len(prefixes.m) >= maxPrefixes {
		clear(prefixes.m) // bounded; cheap to rebuild
	}
	prefixes.m[k] = [2]string{plain, htmlText}
	prefixes.Unlock()
	return plain, htmlText
}

type prefixKey struct{ format, name string }

const maxPrefixes = 1024

var prefixes = struct {
	sync.Mutex
	m map[prefixKey][2]string
}{m: map[prefixKey][2]string{}}

func renderPrefix(format, name string) (plain, htmlText string) {
	htmlText = strings.ReplaceAll(format, "{name}", html.EscapeString(name))
	plain = htmlToText(htmlText)
	// HTML rendering drops trailing space, which separates the name.
	if trail := len(htmlText) - len(strings.TrimRightFunc(htmlText, unicode.IsSpace)); trail > 0 && !strings.HasSuffix(plain, " ") {
		plain += " "
	}
	return plain, htmlText
}

// plainParser renders HTML as plain text: formatting dropped rather than
// spelled as markdown, links as "text (url)", quotes with "> ".
var plainParser = &format.HTMLParser{
	TabsToSpaces:           4,
	Newline:                "\n",
	HorizontalLine:         "\n---\n",
	PillConverter:          format.DefaultPillConverter,
	BoldConverter:          keepText,
	ItalicConverter:        keepText,
	StrikethroughConverter: keepText,
	UnderlineConverter:     keepText,
	MonospaceConverter:     keepText,
	SpoilerConverter:       func(text, _ string, _ format.Context) string { return text },
	MonospaceBlockConverter: func(code, _ string, _ format.Context) string {
		return code
	},
}

func keepText(s string, _ format.Context) string { return s }

// htmlToText is the plain form of HTML.
func htmlToText(h string) string {
	if !strings.ContainsAny(h, "<&") {
		return h
	}
	return plainParser.Parse(h, format.NewContext(context.Background()))
}

// showsSender reports whether an outgoing message needs the sender's name
// in front: in bot mode everything is said by the bot, except the
// bridge's own notices and the core's notices that start with the name
// already ("Ann reacted 👍").
func showsSender(senderFormat string, out *bridge.Outgoing) bool {
	if senderFormat == "" || out.Origin.Connector == bridge.NoticeOrigin {
		return false
	}
	return !(out.Notice && strings.HasPrefix(out.Text, senderName(out.Sender)))
}

// textContent is the m.room.message for out's text: its msgtype, the
// sender's name in front where senderFormat asks, HTML where there is
// formatting.
func textContent(out *bridge.Outgoing, senderFormat string) *event.MessageEventContent {
	// The core's HTML comes from other platforms' users, the API's
	// clients among them: only the subset goes on.
	text, htmlText := out.Text, normalizeHTML(out.HTML)
	if text == "" && htmlText != "" {
		text = htmlToText(htmlText)
	}
	content := &event.MessageEventContent{MsgType: event.MsgText}
	switch {
	case out.Emote:
		content.MsgType = event.MsgEmote
	case out.Notice, out.History:
		// History is a notice so that clients do not notify of it
		// (the .m.rule.suppress_notices push rule).
		content.MsgType = event.MsgNotice
	}
	if showsSender(senderFormat, out) {
		name := senderName(out.Sender)
		if htmlText == "" {
			htmlText = event.TextToHTML(text)
		}
		if out.Emote {
			// Matrix shows an emote as "* bot text": the name reads as
			// the subject, without the template's decoration.
			text = name + " " + text
			htmlText = html.EscapeString(name) + " " + htmlText
		} else {
			plain, prefix := senderPrefix(senderFormat, name)
			text = plain + text
			htmlText = prefix + htmlText
		}
		if htmlText == event.TextToHTML(text) {
			htmlText = "" // the template had no markup: plain text says it all
		}
	}
	content.Body = text
	if htmlText != "" {
		content.Format = event.FormatHTML
		content.FormattedBody = htmlText
	}
	return content
}

// maxContentBytes keeps an event under Matrix's 64 KiB limit, with room
// for the envelope the homeserver adds (and a reply's relation).
const maxContentBytes = 60000

// fitContent makes content fit maxContentBytes as JSON, escapes counted
// (a control character takes six bytes): it drops the HTML copies, which
// is what lets the text through, and if that is not enough, cuts the
// text, marked. An edit carries its text twice, so both are cut.
func fitContent(content *event.MessageEventContent) {
	if surelyFits(content) || contentSize(content) <= maxContentBytes {
		return
	}
	content.Format, content.FormattedBody = "", ""
	nc := content.NewContent
	if nc != nil {
		nc.Format, nc.FormattedBody = "", ""
	}
	for over := contentSize(content) - maxContentBytes; over > 0; over = contentSize(content) - maxContentBytes {
		// Each byte cut takes at least a byte off the JSON.
		before := len(content.Body)
		content.Body = cutText(content.Body, len(content.Body)-over)
		cut := len(content.Body) < before
		if nc != nil {
			before = len(nc.Body)
			nc.Body = cutText(nc.Body, len(nc.Body)-over)
			cut = cut || len(nc.Body) < before
		}
		if !cut {
			return // what is left over is not text; the homeserver decides
		}
	}
}

// surelyFits says, without encoding, that content is far below the
// limit: a text byte takes at most 6 bytes of JSON ("\u00XX"), and
// what else a message carries (type, relation, a few mentions) stays
// well within the rest.
func surelyFits(content *event.MessageEventContent) bool {
	if content.Mentions != nil && len(content.Mentions.UserIDs) > 16 {
		return false
	}
	text := len(content.Body) + len(content.FormattedBody)
	if nc := content.NewContent; nc != nil {
		text += len(nc.Body) + len(nc.FormattedBody)
	}
	return 6*text < maxContentBytes/2
}

// contentSize is the length of content as JSON.
func contentSize(content *event.MessageEventContent) int {
	b, err := json.Marshal(content)
	if err != nil {
		return 0
	}
	return len(b)
}

// cutText shortens s to n bytes or less, at a character boundary, ending
// in "…"; s already that short is returned as it is.
func cutText(s string, n int) string {
	const mark = "…"
	if len(s) <= n {
		return s
	}
	if n < len(mark) {
		return ""
	}
	n -= len(mark)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + mark
}

// withReply points content at the message it answers.
func withReply(content *event.MessageEventContent, replyTo string) {
	if replyTo != "" {
		content.RelatesTo = (&event.RelatesTo{}).SetReplyTo(id.EventID(replyTo))
	}
}

// editContent is the m.replace of target: the new content whole (with the
// sender's name, as the original had), and a "* " fallback for clients
// that do not show edits.
func editContent(out *bridge.Outgoing, senderFormat string) *event.MessageEventContent {
	content := textContent(out, senderFormat)
	content.SetEdit(id.EventID(out.Target))
	fitContent(content)
	return content
}

// mediaMsgType is the msgtype for a MIME type.
func mediaMsgType(mime string) event.MessageType {
	switch {
	case strings.HasPrefix(mime, "image/"):
		return event.MsgImage
	case strings.HasPrefix(mime, "video/"):
		return event.MsgVideo
	case strings.HasPrefix(mime, "audio/"):
		return event.MsgAudio
	}
	return event.MsgFile
}

// kindMsgType is the msgtype that shows m as its kind: a voice note is
// audio and a GIF a video (an image if it is one) whatever their MIME
// types say.
func kindMsgType(m bridge.Media) event.MessageType {
	switch m.Kind {
	case bridge.MediaVoice:
		return event.MsgAudio
	case bridge.MediaSticker:
		return event.MsgImage
	case bridge.MediaGIF:
		if strings.HasPrefix(m.MIME, "image/") {
			return event.MsgImage
		}
		return event.MsgVideo
	}
	return mediaMsgType(m.MIME)
}

// mediaEventType is the event an attachment goes in: stickers have
// their own, without a msgtype.
func mediaEventType(m bridge.Media) event.Type {
	if m.Kind == bridge.MediaSticker {
		return event.EventSticker
	}
	return event.EventMessage
}

// mediaContent is the event for one uploaded attachment; caption (already
// with the sender's name, where shown) is its text, per Matrix's
// convention that a body differing from the file name is a caption. A
// sticker has no caption: its body is its description.
func mediaContent(m bridge.Media, uri id.ContentURI, size int64, caption *event.MessageEventContent) *event.MessageEventContent {
	name := m.Name
	if name == "" {
		name = mediaName(m)
	}
	content := &event.MessageEventContent{
		MsgType:  kindMsgType(m),
		Body:     name,
		FileName: name,
		URL:      uri.CUString(),
		Info: &event.FileInfo{MimeType: m.MIME, Size: int(size),
			Width:    int(within(int64(m.Width), maxPixels)),
			Height:   int(within(int64(m.Height), maxPixels)),
			Duration: int(within(m.DurationMS, maxDurationMS)),
		},
	}
	if caption != nil && strings.TrimSpace(caption.Body) != "" {
		content.Body = strings.TrimRightFunc(caption.Body, unicode.IsSpace)
		if caption.FormattedBody != "" {
			content.Format = event.FormatHTML
			content.FormattedBody = strings.TrimRightFunc(caption.FormattedBody, unicode.IsSpace)
		}
	}
	switch m.Kind {
	case bridge.MediaSticker:
		content.MsgType, content.FileName = "", ""
		content.Format, content.FormattedBody = "", ""
	case bridge.MediaVoice:
		// Element shows audio with these as a voice message, its waveform
		// drawn from MSC1767's.
		content.MSC3245Voice = &event.MSC3245Voice{}
		content.MSC1767Audio = &event.MSC1767Audio{Duration: content.Info.Duration, Waveform: fitWaveform(m.Waveform)}
	case bridge.MediaGIF:
		content.Info.MauGIF = true
	}
	return content
}

// mediaExtras are the keys of an attachment's content that mautrix's
// types lack: the flags with which mautrix bridges mark a GIF, for the
// clients that play it as one (looping, silent, without controls).
func mediaExtras(m bridge.Media) map[string]any {
	if m.Kind != bridge.MediaGIF {
		return nil
	}
	return map[string]any{"info": map[string]any{keyGIF: true, keyLoop: true, keyAutoplay: true, keyHideControl: true, keyNoAudio: true}}
}

// mediaName names an attachment that has no name of its own.
func mediaName(m bridge.Media) string {
	switch m.Kind {
	case bridge.MediaVoice:
		return "Voice message" // as Element names its own
	case bridge.MediaSticker:
		return "sticker"
	case bridge.MediaGIF:
		return "GIF"
	}
	return mediaWord(mediaMsgType(m.MIME))
}

func mediaWord(t event.MessageType) string {
	switch t {
	case event.MsgImage:
		return "image"
	case event.MsgVideo:
		return "video"
	case event.MsgAudio:
		return "audio"
	}
	return "file"
}

// maxDescription bounds a place's label, which the event's size limit
// does not see to.
const maxDescription = 1000

// geoURI is l as an RFC 5870 URI.
func geoURI(l bridge.Location) string {
	return "geo:" + strconv.FormatFloat(l.Latitude, 'f', -1, 64) + "," + strconv.FormatFloat(l.Longitude, 'f', -1, 64)
}

// locationContent is the m.location for out's place: geo_uri and
// MSC3488's keys for clients that draw a map (Element marks a pin, or
// the sender for a live location, which here is where they were), and a
// body that says it in words, the URI last, for those that do not.
func locationContent(out *bridge.Outgoing, senderFormat string) *event.Content {
	l := out.Location
	uri := geoURI(*l)
	title := "📍 Location"
	if l.Live {
		title = "📍 Live location"
	}
	name, address := strings.TrimSpace(l.Name), strings.TrimSpace(l.Address)
	if name != "" {
		title += ": " + name
	}
	caption := out.Text
	if caption == "" && out.HTML != "" {
		caption = htmlToText(normalizeHTML(out.HTML))
	}
	lines := []string{title}
	for _, line := range []string{address, caption} {
		if line = strings.TrimSpace(line); line != "" {
			lines = append(lines, line)
		}
	}
	textOut := *out
	textOut.Text, textOut.HTML, textOut.Emote = strings.Join(append(lines, uri), "\n"), "", false
	content := textContent(&textOut, senderFormat)
	content.MsgType = event.MsgLocation
	content.GeoURI = uri
	fitContent(content)
	withReply(content, out.ReplyTo)

	place := map[string]any{"uri": uri}
	if desc := cmp.Or(name, address); desc != "" {
		// A label on the map; the body, which fitContent bounds, has it whole.
		place["description"] = cutText(desc, maxDescription)
	}
	asset := "m.pin"
	if l.Live {
		asset = "m.self"
	}
	raw := map[string]any{keyLocation: place, keyAsset: map[string]any{"type": asset}}
	if !out.Time.IsZero() {
		raw[keyLocationTS] = out.Time.UnixMilli()
	}
	return &event.Content{Parsed: content, Raw: raw}
}

// locationEditContent moves a live location: an edit of out.Target whose
// new content is the new place, map keys and all.
func locationEditContent(out *bridge.Outgoing, senderFormat string) (*event.Content, error) {
	c := locationContent(out, senderFormat)
	msg := c.Parsed.(*event.MessageEventContent)
	msg.SetEdit(id.EventID(out.Target))
	data, err := json.Marshal(msg.NewContent)
	if err != nil {
		return nil, err
	}
	var moved map[string]any
	if err := json.Unmarshal(data, &moved); err != nil {
		return nil, err
	}
	maps.Copy(moved, c.Raw)
	c.Raw["m.new_content"] = moved
	return c, nil
}

// captionEditContent changes the caption of the attachment event orig
// (its content) to out's text: the new content is the attachment again,
// so clients keep showing it (a text edit would turn it into words), with
// the caption as its body (MSC2530) and its file name kept apart.
func captionEditContent(out *bridge.Outgoing, senderFormat string, orig map[string]any) *event.Content {
	caption := textContent(out, senderFormat)
	fresh := maps.Clone(orig)
	delete(fresh, "m.relates_to")
	delete(fresh, "m.new_content")
	delete(fresh, keyField)
	if _, named := fresh["filename"]; !named {
		fresh["filename"] = orig["body"]
	}
	fresh["body"] = caption.Body
	delete(fresh, "format")
	delete(fresh, "formatted_body")
	if caption.Format == event.FormatHTML && caption.FormattedBody != "" {
		fresh["format"], fresh["formatted_body"] = caption.Format, caption.FormattedBody
	}
	top := maps.Clone(fresh)
	top["body"] = "* " + caption.Body
	if f, ok := fresh["formatted_body"].(string); ok {
		top["formatted_body"] = "* " + f
	}
	top["m.new_content"] = fresh
	top["m.relates_to"] = map[string]any{"rel_type": "m.replace", "event_id": out.Target}
	return &event.Content{Raw: top}
}

// isAttachment reports whether content is an attachment's, whose caption
// an edit changes.
func isAttachment(content map[string]any) bool {
	switch event.MessageType(fmt.Sprint(content["msgtype"])) {
	case event.MsgImage, event.MsgVideo, event.MsgAudio, event.MsgFile:
		return true
	}
	return false
}

// reactionContent annotates target with emoji.
func reactionContent(target, emoji string) *event.ReactionEventContent {
	return &event.ReactionEventContent{RelatesTo: *(&event.RelatesTo{}).SetAnnotation(id.EventID(target), emoji)}
}

// withKey is content as JSON with the delivery key added. The key is
// spliced into the encoded object: wrapping it in an event.Content with
// Raw would have mautrix encode the content, decode it into a map and
// encode that again, for every message.
func withKey(content any, key string) any {
	if key == "" {
		return content
	}
	data, err := json.Marshal(content)
	if err != nil || len(data) < 2 || data[0] != '{' || data[len(data)-1] != '}' {
		// Not an object: let the send report what is wrong with it.
		return content
	}
	quoted, _ := json.Marshal(key)
	out := make([]byte, 0, len(data)+len(keyField)+len(quoted)+4)
	out = append(out, data[:len(data)-1]...)
	if len(data) > 2 {
		out = append(out, ',')
	}
	out = append(out, '"')
	out = append(out, keyField...)
	out = append(out, '"', ':')
	out = append(out, quoted...)
	out = append(out, '}')
	return json.RawMessage(out)
}
