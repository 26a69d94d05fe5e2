package irc

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

// Outbound rendering: an outgoing event becomes the bodies of the PRIVMSG,
// NOTICE or ACTION lines that show it, each under the 512-byte limit.

// IRC formatting codes we write and read.
const (
	codeBold      = '\x02'
	codeColour    = '\x03'
	codeReset     = '\x0f'
	codeMonospace = '\x11'
	codeItalic    = '\x1d'
	codeStrike    = '\x1e'
	codeUnderline = '\x1f'
)

// toggles are the on/off codes, in the order they are reopened.
var toggles = []byte{codeBold, codeItalic, codeUnderline, codeStrike, codeMonospace}

// formatReserve is room kept in every chunk for reopening the codes active
// at its start and closing them at its end.
const formatReserve = 6

// zwj goes after a relayed name's first character: IRC clients highlight
// whole words, so "A\u200dnn" does not highlight the IRC user Ann.
const zwj = "\u200d"

// nickPalette are mIRC colours readable on light and dark backgrounds.
var nickPalette = []int{2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13}

// piece is one part of a parsed sender_format.
type piece struct {
	lit  string
	kind byte // 0 literal, 'n' {name}, 't' {text}
}

// template is a parsed sender_format.
type template []piece

var errNoText = errors.New("must contain {text} exactly once (e.g. \"<{name}> {text}\")")

func parseTemplate(f string) (template, error) {
	if strings.ContainsAny(f, "\r\n\x00\x01") {
		return nil, errors.New("may not hold line breaks, NUL or \\x01")
	}
	var t template
	texts := 0
	for f != "" {
		i := strings.IndexByte(f, '{')
		if i < 0 {
			t = append(t, piece{lit: f})
			break
		}
		if i > 0 {
			t = append(t, piece{lit: f[:i]})
		}
		f = f[i:]
		switch {
		case strings.HasPrefix(f, "{name}"):
			t = append(t, piece{kind: 'n'})
			f = f[len("{name}"):]
		case strings.HasPrefix(f, "{text}"):
			t = append(t, piece{kind: 't'})
			texts++
			f = f[len("{text}"):]
		default:
			if j := strings.IndexByte(f, '}'); j > 0 && !strings.ContainsAny(f[1:j], " {") {
				return nil, fmt.Errorf("has unknown placeholder %s: use {name} and {text}", f[:j+1])
			}
			t = append(t, piece{lit: "{"})
			f = f[1:]
		}
	}
	if texts != 1 {
		return nil, errNoText
	}
	return t, nil
}

func checkSenderFormat(f string) error {
	_, err := parseTemplate(f)
	return err
}

// render writes the template with name (already decorated) and text.
// A coloured name ends in a bare \x03, which would swallow a digit or
// comma after it as a colour: an empty bold toggle keeps them apart.
func (t template) render(b []byte, name, text string) []byte {
	for i, p := range t {
		switch p.kind {
		case 0:
			b = append(b, p.lit...)
		case 't':
			b = append(b, text...)
		case 'n':
			b = append(b, name...)
			if name != "" && name[len(name)-1] == codeColour {
				next := ""
				for _, q := range t[i+1:] {
					if next = q.lit; q.kind == 't' {
						next = text
					} else if q.kind == 'n' {
						next = name
					}
					if next != "" {
						break
					}
				}
				if next != "" && (next[0] == ',' || '0' <= next[0] && next[0] <= '9') {
					b = append(b, codeBold, codeBold)
				}
			}
		}
	}
	return b
}

// overhead is the template's length around {text}.
func (t template) overhead(name string) int {
	return len(t.render(nil, name, "")) + 2 // the possible empty bold toggle
}

var emoteTemplate, _ = parseTemplate("{name} {text}")
var bareTemplate, _ = parseTemplate("{text}")

// cleanText removes what must not reach IRC from relayed text: mIRC codes
// of its own (we add ours from the HTML), \x01 (it would start a CTCP) and
// NUL.
func cleanText(s string) string {
	s = ircmsg.StripFormatting(s)
	if strings.ContainsAny(s, "\x01\x00") {
		s = strings.NewReplacer("\x01", "", "\x00", "").Replace(s)
	}
	return s
}

// cleanName is a sender's name fit for one line: no codes, no breaks.
func cleanName(s bridge.Sender) string {
	name := s.Name
	if strings.TrimSpace(name) == "" {
		name = s.ID
	}
	name = strings.Join(strings.Fields(cleanText(name)), " ")
	if name == "" {
		return "someone"
	}
	return name
}

// decorateName applies zero_width_names and nick_colors to a clean name.
func decorateName(name string, zeroWidth, colour bool) string {
	if zeroWidth {
		if _, n := utf8.DecodeRuneInString(name); n > 0 && n < len(name) {
			name = name[:n] + zwj + name[n:]
		}
	}
	if colour {
		name = string(codeColour) + fmt.Sprintf("%02d", nickColour(name)) + name + string(codeColour)
	}
	return name
}

// nickColour picks a palette colour from a hash of name (with its ZWJ, if
// any: the same name always decorates the same way).
func nickColour(name string) int {
	h := fnv.New32a()
	h.Write([]byte(name))
	return nickPalette[h.Sum32()%uint32(len(nickPalette))]
}

// lineKind is what an IRC line of a relayed message is sent as.
type lineKind int

const (
	linePrivmsg lineKind = iota
	lineNotice
	lineAction
)

// renderer turns outgoing events into line bodies.
type renderer struct {
	format    template
	zeroWidth bool
	colours   bool
	maxLines  int
}

// lineOpts are the circumstances of one rendering.
type lineOpts struct {
	// prefixLen is the length of the sending client's nick!user@host,
	// which counts against the 512 bytes.
	prefixLen int
	// media are lines to show before the text (attachments' links).
	media []string
	// full, when max_lines cuts the message, may publish the whole text
	// and return its link for the marker ("" for none).
	full func(text string) string
	// asSender: the sender's own puppet sends, so no name is added.
	asSender bool
}

// lines renders out for its chat.
func (r *renderer) lines(out *bridge.Outgoing, o lineOpts) (lineKind, []string) {
	kind := linePrivmsg
	prefixLen, media, full := o.prefixLen, o.media, o.full
	body := out.Text
	if out.HTML != "" {
		body = htmlToIRC(out.HTML)
	} else {
		body = cleanText(body)
	}
	if len(media) > 0 {
		body = strings.Join(append(media, body), "\n")
	}
	name := cleanName(out.Sender)
	dname := decorateName(name, r.zeroWidth, r.colours)
	tpl := r.format
	if o.asSender {
		tpl, dname = bareTemplate, ""
	}
	switch {
	case out.Emote && o.asSender:
		kind = lineAction
	case out.Emote:
		kind, tpl = lineAction, emoteTemplate
	case out.Notice:
		kind = lineNotice
		if out.Origin.Connector == bridge.NoticeOrigin {
			// The bridge's own notices speak for themselves.
			tpl = bareTemplate
		} else if rest, ok := strings.CutPrefix(body, name+" "); ok {
			// "Ann reacted 👍 to …": the name is there already.
			tpl, body = emoteTemplate, rest
		}
	}
	budget := ircmsg.MaxLineLen - formatReserve
	if kind == lineAction {
		budget -= len("\x01ACTION \x01")
	}
	var chunks []string
	// SplitText takes a limit of 0 or less as 512: a name longer than a
	// line must not get there.
	if room := budget - tpl.overhead(dname); room > 0 {
		chunks = ircmsg.SplitText(prefixLen, out.Chat.ID, body, room)
	}
	if len(chunks) == 0 && body != "" {
		// The name and template leave no room: send the text alone.
		chunks = ircmsg.SplitText(prefixLen, out.Chat.ID, body, budget)
		tpl, dname = bareTemplate, ""
	}
	chunks = carryFormatting(chunks)
	if r.maxLines > 0 && len(chunks) > r.maxLines {
		link := ""
		if full != nil {
			link = full(ircmsg.StripFormatting(body))
		}
		chunks = append(chunks[:r.maxLines:r.maxLines], moreMarker(len(chunks)-r.maxLines, link))
	}
	lines := make([]string, len(chunks))
	for i, c := range chunks {
		b := tpl.render(make([]byte, 0, len(c)+len(dname)+16), dname, c)
		if kind == lineAction {
			b = append(append([]byte("\x01ACTION "), b...), '\x01')
		}
		lines[i] = string(b)
	}
	return kind, lines
}

// moreMarker stands for n lines cut, with a link to the whole if any.
func moreMarker(n int, link string) string {
	s := "… (1 more line"
	if n != 1 {
		s = "… (" + strconv.Itoa(n) + " more lines"
	}
	if link != "" {
		return s + ": " + link + ")"
	}
	return s + ")"
}

// carryFormatting makes every chunk stand alone: IRC formatting ends with
// the line, so codes open at the end of one chunk are reopened at the start
// of the next, and each chunk with codes still open is closed with a reset
// so that template text after {text} is plain.
func carryFormatting(chunks []string) []string {
	var open [256]bool
	for i, c := range chunks {
		var reopen []byte
		for _, t := range toggles {
			if open[t] {
				reopen = append(reopen, t)
			}
		}
		for j := 0; j < len(c); j++ {
			switch c[j] {
			case codeReset:
				open = [256]bool{}
			case codeBold, codeItalic, codeUnderline, codeStrike, codeMonospace:
				open[c[j]] = !open[c[j]]
			}
		}
		stillOpen := false
		for _, t := range toggles {
			stillOpen = stillOpen || open[t]
		}
		if len(reopen) > 0 || stillOpen {
			s := string(reopen) + c
			if stillOpen {
				s += string(codeReset)
			}
			chunks[i] = s
		}
	}
	return chunks
}
