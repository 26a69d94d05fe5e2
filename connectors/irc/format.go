package irc

import (
	"html"
	"strconv"
	"strings"

	nethtml "golang.org/x/net/html"
	"golang.org/x/net/html/atom"

	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

// Formatting both ways between the core's HTML subset (b, i, s, u, code,
// pre, a, blockquote, br, p, ul, ol, li) and mIRC control codes.

// inlineCode is the control code each inline tag toggles.
var inlineCode = map[atom.Atom]byte{
	atom.B: codeBold, atom.Strong: codeBold,
	atom.I: codeItalic, atom.Em: codeItalic,
	atom.S: codeStrike, atom.Strike: codeStrike, atom.Del: codeStrike,
	atom.U: codeUnderline, atom.Ins: codeUnderline,
	atom.Code: codeMonospace,
}

// ircWriter builds IRC text line by line, putting quote marks and list
// bullets at the start of each line.
type ircWriter struct {
	b       strings.Builder
	lineBuf []byte // prefix owed at the start of the next text
	atStart bool
	quote   int
	pre     int
	lists   []int // per open list: 0 for ul, else the next number of an ol
	// links holds, per open <a>, its href and where its text starts;
	// deepLinks counts those opened past maxNest, which are not shown.
	links     []link
	deepLinks int
}

// maxNest bounds the nesting that shows: quote marks, list indents and
// links within links. Each level costs bytes on every line under it (or
// a scan of the link's text), so unbounded nesting would make a message
// grow quadratically.
const maxNest = 8

type link struct {
	href  string
	start int
}

func (w *ircWriter) newline() {
	if !w.atStart {
		w.b.WriteByte('\n')
		w.atStart = true
	}
}

func (w *ircWriter) write(s string) {
	if s == "" {
		return
	}
	if w.atStart {
		w.b.WriteString(strings.Repeat("> ", min(w.quote, maxNest)))
		w.b.Write(w.lineBuf)
		w.lineBuf = w.lineBuf[:0]
		w.atStart = false
	}
	w.b.WriteString(s)
}

// preText writes text inside <pre>, keeping its line breaks.
func (w *ircWriter) preText(s string) {
	for i, line := range strings.Split(cleanText(s), "\n") {
		if i > 0 {
			w.atStart = false
			w.newline()
		}
		w.write(line)
	}
}

// htmlToIRC renders the HTML subset as IRC text with control codes; line
// breaks are "\n". Unknown tags are dropped, their text kept.
func htmlToIRC(src string) string {
	w := &ircWriter{atStart: true}
	z := nethtml.NewTokenizer(strings.NewReader(src))
	var space bool // collapsed whitespace owed between two texts
	for {
		tt := z.Next()
		if tt == nethtml.ErrorToken {
			break
		}
		tok := z.Token()
		switch tt {
		case nethtml.TextToken:
			s := tok.Data
			if w.pre == 0 {
				lead := s != "" && isHTMLSpace(s[0])
				trail := s != "" && isHTMLSpace(s[len(s)-1])
				words := strings.Join(strings.Fields(cleanText(s)), " ")
				if words == "" {
					space = space || s != ""
					continue
				}
				if (space || lead) && !w.atStart {
					w.write(" ")
				}
				w.write(words)
				space = trail
				continue
			}
			w.preText(s)
		case nethtml.StartTagToken, nethtml.SelfClosingTagToken:
			a := tok.DataAtom
			if c, ok := inlineCode[a]; ok && w.pre == 0 {
				if space && !w.atStart {
					w.write(" ")
				}
				space = false
				w.write(string(c))
				continue
			}
			switch a {
			case atom.Br:
				w.atStart = false // an empty line is kept
				w.b.WriteByte('\n')
				w.atStart = true
				space = false
			case atom.P, atom.Div:
				w.newline()
				space = false
			case atom.Blockquote:
				w.newline()
				w.quote++
				space = false
			case atom.Pre:
				w.newline()
				w.pre++
				w.write(string(codeMonospace))
				space = false
			case atom.Ul, atom.Ol:
				w.newline()
				n := 0
				if a == atom.Ol {
					n = 1
					for _, at := range tok.Attr {
						if at.Key == "start" {
							if v, err := strconv.Atoi(at.Val); err == nil {
								n = v
							}
						}
					}
				}
				w.lists = append(w.lists, n)
				space = false
			case atom.Li:
				w.newline()
				space = false
				indent := strings.Repeat("  ", min(max(len(w.lists)-1, 0), maxNest))
				bullet := "• "
				if l := len(w.lists); l > 0 && w.lists[l-1] > 0 {
					bullet = strconv.Itoa(w.lists[l-1]) + ". "
					w.lists[l-1]++
				}
				w.lineBuf = append(w.lineBuf, indent+bullet...)
			case atom.A:
				href := ""
				for _, at := range tok.Attr {
					if at.Key == "href" {
						href = at.Val
					}
				}
				if space && !w.atStart {
					w.write(" ")
				}
				space = false
				if len(w.links) == maxNest {
					w.deepLinks++
					continue
				}
				w.links = append(w.links, link{href: href, start: w.b.Len()})
			}
		case nethtml.EndTagToken:
			a := tok.DataAtom
			if c, ok := inlineCode[a]; ok && w.pre == 0 {
				w.write(string(c))
				continue
			}
			switch a {
			case atom.P, atom.Div:
				w.newline()
				space = false
			case atom.Blockquote:
				w.newline()
				w.quote = max(w.quote-1, 0)
				space = false
			case atom.Pre:
				if w.pre > 0 {
					w.write(string(codeMonospace))
					w.pre--
				}
				w.newline()
				space = false
			case atom.Ul, atom.Ol:
				if len(w.lists) > 0 {
					w.lists = w.lists[:len(w.lists)-1]
				}
				w.newline()
				space = false
			case atom.Li:
				w.newline()
				space = false
			case atom.A:
				if w.deepLinks > 0 {
					w.deepLinks--
				} else if n := len(w.links); n > 0 {
					l := w.links[n-1]
					w.links = w.links[:n-1]
					w.endLink(l)
				}
			}
		}
	}
	return strings.TrimRight(w.b.String(), "\n")
}

// endLink shows a link's target after its text, unless the text says it
// already ("https://x.org" or "x.org"), or alone when it has no text.
func (w *ircWriter) endLink(l link) {
	href := cleanText(l.href)
	if href == "" || strings.HasPrefix(strings.ToLower(href), "javascript:") {
		return
	}
	shown := strings.TrimSpace(ircStrip(w.b.String()[min(l.start, w.b.Len()):]))
	bare := strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(href, "mailto:"), "https://"), "http://")
	switch {
	case shown == "":
		w.write(href)
	case shown == href || shown == bare || shown == strings.TrimSuffix(bare, "/"):
	default:
		w.write(" (" + href + ")")
	}
}

func ircStrip(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case codeBold, codeItalic, codeStrike, codeUnderline, codeMonospace:
			return -1
		}
		return r
	}, s)
}

func isHTMLSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'
}

// ircTag is the HTML tag each toggle opens, inbound.
var ircTag = map[byte]string{
	codeBold: "b", codeItalic: "i", codeStrike: "s", codeUnderline: "u", codeMonospace: "code",
}

// ircToHTML renders IRC text with control codes as the HTML subset. ok is
// false when the text has no formatting (colours alone do not count: they
// are dropped), so the event carries plain text only.
func ircToHTML(s string) (out string, ok bool) {
	var b strings.Builder
	var stack []byte // open toggles, innermost last
	closeTo := func(n int) {
		for i := len(stack) - 1; i >= n; i-- {
			b.WriteString("</" + ircTag[stack[i]] + ">")
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch c {
		case codeBold, codeItalic, codeStrike, codeUnderline, codeMonospace:
			i++
			at := -1
			for j, t := range stack {
				if t == c {
					at = j
				}
			}
			if at < 0 {
				stack = append(stack, c)
				b.WriteString("<" + ircTag[c] + ">")
				ok = true
				continue
			}
			// Close it, reopening those opened inside it.
			inner := append([]byte(nil), stack[at+1:]...)
			closeTo(at)
			stack = append(stack[:at], inner...)
			for _, t := range inner {
				b.WriteString("<" + ircTag[t] + ">")
			}
		case codeReset:
			i++
			closeTo(0)
			stack = stack[:0]
		case codeColour, '\x04', '\x16':
			// Colours and reverse have no HTML here: skipped with their
			// arguments, by the same rules StripFormatting uses.
			j := i + 1
			for j < len(s) && s[j] != codeColour && s[j] != '\x04' && s[j] != '\x16' && !isToggle(s[j]) && s[j] != codeReset {
				j++
			}
			b.WriteString(html.EscapeString(ircmsg.StripFormatting(s[i:j])))
			i = j
		default:
			j := i
			for j < len(s) && !isCode(s[j]) {
				j++
			}
			b.WriteString(html.EscapeString(s[i:j]))
			i = j
		}
	}
	closeTo(0)
	if !ok {
		return "", false
	}
	return strings.ReplaceAll(b.String(), "\n", "<br>"), true
}

func isToggle(c byte) bool {
	switch c {
	case codeBold, codeItalic, codeStrike, codeUnderline, codeMonospace:
		return true
	}
	return false
}

func isCode(c byte) bool {
	return isToggle(c) || c == codeReset || c == codeColour || c == '\x04' || c == '\x16'
}
