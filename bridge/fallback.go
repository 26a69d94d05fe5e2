package bridge

import (
	"fmt"
	"html"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Text shaping for destinations that lack a capability. Everything here is
// pure: it turns an outgoing event into what the destination can show.

// quoteSnippetRunes bounds how much of a message a quote shows.
const quoteSnippetRunes = 100

func senderName(s Sender) string {
	if s.Name != "" {
		return s.Name
	}
	if s.ID != "" {
		return s.ID
	}
	return "someone"
}

func shorten(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return strings.TrimSpace(string(r[:n-1])) + "…"
}

// withQuote prefixes out's text (and HTML, where it has some) with a quote
// of the message it answers, for a destination that cannot reply natively
// or does not have the original.
func withQuote(out *Outgoing, q *storedQuote) {
	text := shorten(q.Text, quoteSnippetRunes)
	if q.Deleted {
		text = "(deleted message)"
	}
	out.Text = fmt.Sprintf("> %s: %s\n%s", q.Sender, text, out.Text)
	if out.HTML != "" {
		out.HTML = fmt.Sprintf("<blockquote><b>%s</b>: %s</blockquote>%s", html.EscapeString(q.Sender), html.EscapeString(text), out.HTML)
	}
}

// asEditCopy turns an edit into a new message marked as a correction.
func asEditCopy(out *Outgoing) {
	out.Kind = KindMessage
	out.Text = "✎ " + out.Text
	if out.HTML != "" {
		out.HTML = "✎ " + out.HTML
	}
	out.Target = ""
}

// asNotice turns out into a short notice message with text.
func asNotice(out *Outgoing, text string) {
	out.Kind = KindMessage
	out.Notice = true
	out.Text = text
	out.HTML = ""
	out.Media = nil
	out.Target, out.TargetReaction, out.Emoji = "", "", ""
}

func reactionNotice(ev *Event, q *storedQuote) string {
	if q != nil && !q.Deleted {
		return fmt.Sprintf("%s reacted %s to “%s”", senderName(ev.Sender), ev.Emoji, shorten(q.Text, 60))
	}
	return fmt.Sprintf("%s reacted %s", senderName(ev.Sender), ev.Emoji)
}

func deleteNotice(ev *Event) string {
	return senderName(ev.Sender) + " deleted a message"
}

// locationAsText shows a location as lines of text with a map link, for
// a destination that cannot show a place: the title and name, the
// address, the caption (the message's text), the link.
func locationAsText(out *Outgoing) {
	l := out.Location
	title := "📍 Location"
	if l.Live {
		title = "📍 Live location"
	}
	if name := strings.TrimSpace(l.Name); name != "" {
		title += ": " + name
	}
	lines := []string{title}
	for _, line := range []string{l.Address, out.Text} {
		if line = strings.TrimSpace(line); line != "" {
			lines = append(lines, line)
		}
	}
	lines = append(lines, MapLink(*l))
	out.Text = strings.Join(lines, "\n")
	out.HTML = ""
	out.Location = nil
}

// pollAsText shows a poll as its question and numbered options, for a
// destination that cannot ask one.
func pollAsText(out *Outgoing) {
	lines := []string{"📊 " + strings.TrimSpace(out.Poll.Question)}
	for i, o := range out.Poll.Options {
		lines = append(lines, fmt.Sprintf("%d. %s", i+1, strings.TrimSpace(o)))
	}
	if out.Text != "" {
		lines = append([]string{out.Text}, lines...)
	}
	out.Text = strings.Join(lines, "\n")
	out.HTML = ""
	out.Poll = nil
}

// voteWords names what a vote picked: "“Yes”, “Maybe”", or words for a
// withdrawn vote; options unknown to the core show as numbers.
func voteWords(v *Vote) string {
	if len(v.Choices) == 0 {
		return "no option"
	}
	picked := make([]string, len(v.Choices))
	for i, c := range v.Choices {
		if c < len(v.Options) {
			picked[i] = "“" + strings.TrimSpace(v.Options[c]) + "”"
		} else {
			picked[i] = "option " + strconv.Itoa(c+1)
		}
	}
	return strings.Join(picked, ", ")
}

// VoteText is a vote in words with the poll's count, for a destination
// that cannot show it as the voter's own: "Ann voted for “Yes” in “Lunch?”
// (Yes 2 · No 1)". Connectors that show polls but cannot vote as the
// sender use it too.
func VoteText(ev *Event) string {
	v := ev.Vote
	if v == nil {
		return senderName(ev.Sender) + " voted"
	}
	text := senderName(ev.Sender) + " voted for " + voteWords(v)
	if len(v.Choices) == 0 {
		text = senderName(ev.Sender) + " withdrew their vote"
	}
	if q := strings.TrimSpace(v.Question); q != "" {
		text += " in “" + shorten(q, 60) + "”"
	}
	if len(v.Tally) == len(v.Options) && len(v.Options) > 0 {
		counts := make([]string, len(v.Options))
		for i, o := range v.Options {
			counts[i] = shorten(o, 30) + " " + strconv.Itoa(v.Tally[i])
		}
		text += " (" + strings.Join(counts, " · ") + ")"
	}
	return text
}

// MapLink is a link that shows l on a map in any browser.
func MapLink(l Location) string {
	return "https://maps.google.com/?q=" + strconv.FormatFloat(l.Latitude, 'f', -1, 64) + "," + strconv.FormatFloat(l.Longitude, 'f', -1, 64)
}

// MediaWord names an attachment in words, for destinations that show
// it as text: "voice message", "image", "file".
func MediaWord(m Media) string {
	switch m.Kind {
	case MediaVoice:
		return "voice message"
	case MediaSticker:
		return "sticker"
	case MediaGIF:
		return "GIF"
	case MediaVideoNote:
		return "video message"
	}
	mime := m.MIME
	switch {
	case strings.HasPrefix(mime, "image/"):
		return "image"
	case strings.HasPrefix(mime, "video/"):
		return "video"
	case strings.HasPrefix(mime, "audio/"):
		return "audio"
	}
	return "file"
}

func humanSize(n int64) string {
	switch {
	case n <= 0:
		return ""
	case n < 1024:
		return fmt.Sprintf("%d B", n)
	case n < 1024*1024:
		return fmt.Sprintf("%.1f KB", float64(n)/1024)
	}
	return fmt.Sprintf("%.1f MB", float64(n)/(1024*1024))
}

// mediaPlaceholders replaces attachments with a line each naming them, for
// a destination that carries no media.
func mediaPlaceholders(out *Outgoing) {
	var lines []string
	for _, m := range out.Media {
		desc := MediaWord(m)
		details := []string{}
		if m.Name != "" {
			details = append(details, m.Name)
		}
		if s := humanSize(m.Size); s != "" {
			details = append(details, s)
		}
		line := "[" + desc
		if len(details) > 0 {
			line += ": " + strings.Join(details, ", ")
		}
		line += "]"
		if m.Caption != "" && m.Caption != out.Text {
			line += " " + m.Caption
		}
		lines = append(lines, line)
	}
	if out.Text != "" {
		lines = append(lines, out.Text)
	}
	out.Text = strings.Join(lines, "\n")
	out.HTML = ""
	out.Media = nil
}

// splitText cuts s into pieces of at most max runes, preferring to break
// after a newline, then after a space, and never inside a UTF-8 sequence.
func splitText(s string, max int) []string {
	if max <= 0 || utf8.RuneCountInString(s) <= max {
		return []string{s}
	}
	var parts []string
	for utf8.RuneCountInString(s) > max {
		// Byte offset of the rune just past the limit.
		limit, n := 0, 0
		for i := range s {
			if n == max {
				limit = i
				break
			}
			n++
		}
		cut := strings.LastIndexByte(s[:limit], '\n')
		if cut <= 0 {
			cut = strings.LastIndexFunc(s[:limit], unicode.IsSpace)
		}
		if cut <= 0 {
			cut = limit
		} else {
			cut++ // keep the separator with the first piece
		}
		parts = append(parts, strings.TrimRightFunc(s[:cut], unicode.IsSpace))
		s = strings.TrimLeftFunc(s[cut:], unicode.IsSpace)
	}
	if s != "" {
		parts = append(parts, s)
	}
	return parts
}
