package matrix

import (
	"context"
	"encoding/json"
	"html"
	"strings"
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
// as HTML and as plain text.
func senderPrefix(format, name string) (plain, htmlText string) {
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
	if contentSize(content) <= maxContentBytes {
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

// mediaContent is the event for one uploaded attachment; caption (already
// with the sender's name, where shown) is its text, per Matrix's
// convention that a body differing from the file name is a caption.
func mediaContent(m bridge.Media, uri id.ContentURI, size int64, caption *event.MessageEventContent) *event.MessageEventContent {
	name := m.Name
	if name == "" {
		name = mediaWord(mediaMsgType(m.MIME))
	}
	content := &event.MessageEventContent{
		MsgType:  mediaMsgType(m.MIME),
		Body:     name,
		FileName: name,
		URL:      uri.CUString(),
		Info:     &event.FileInfo{MimeType: m.MIME, Size: int(size)},
	}
	if caption != nil && strings.TrimSpace(caption.Body) != "" {
		content.Body = strings.TrimRightFunc(caption.Body, unicode.IsSpace)
		if caption.FormattedBody != "" {
			content.Format = event.FormatHTML
			content.FormattedBody = strings.TrimRightFunc(caption.FormattedBody, unicode.IsSpace)
		}
	}
	return content
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

// reactionContent annotates target with emoji.
func reactionContent(target, emoji string) *event.ReactionEventContent {
	return &event.ReactionEventContent{RelatesTo: *(&event.RelatesTo{}).SetAnnotation(id.EventID(target), emoji)}
}

// withKey wraps content with the delivery key.
func withKey(content any, key string) *event.Content {
	c := &event.Content{Parsed: content}
	if key != "" {
		c.Raw = map[string]any{keyField: key}
	}
	return c
}
