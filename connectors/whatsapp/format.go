package whatsapp

import (
	"html"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// WhatsApp markup is in-band: *bold*, _italic_, ~strike~, `code`,
// ```monospace``` (which may span lines) and "> " quote lines. A marker
// counts only where WhatsApp would render it: an opening marker follows
// the start, a space or punctuation and is followed by non-space text; a
// closing marker follows non-space text and is followed by the end, a
// space or punctuation. So "2*3*4", "snake_case_name" and "* spaced *"
// stay literal. Nothing inside code is formatted, and only ``` spans lines.

// waToHTML renders WhatsApp markup as the neutral HTML subset (b, i, s,
// code, pre, blockquote, br), escaping all other text. changed is false
// when the text has no markup at all (newlines alone do not count), so the
// caller can leave Event.HTML empty; html is still the escaped rendering.
func waToHTML(text string) (out string, changed bool) {
	r := waRenderer{s: text}
	r.render()
	return r.out.String(), r.changed
}

type waSpan struct{ start, end int } // [start, end): opener at start, closer starts at end

type waRenderer struct {
	s       string
	out     strings.Builder
	changed bool
	inQuote bool
	// noBreak swallows the newline right after a <pre>: the block already
	// ends the line.
	noBreak bool

	// Per line: inline code spans by opener position, and the valid closers
	// of *, _ and ~ outside them, sorted.
	code    map[int]int
	closers [3][]int
}

func (r *waRenderer) render() {
	s := r.s
	pos := 0
	for _, b := range r.blocks() {
		r.text(pos, b.start)
		content := s[b.start+3 : b.end]
		r.changed = true
		if strings.Contains(content, "\n") {
			r.out.WriteString("<pre>" + html.EscapeString(content) + "</pre>")
			r.noBreak = b.end+3 < len(s) && s[b.end+3] == '\n'
		} else {
			r.out.WriteString("<code>" + html.EscapeString(content) + "</code>")
		}
		pos = b.end + 3
	}
	r.text(pos, len(s))
	if r.inQuote {
		r.out.WriteString("</blockquote>")
	}
}

// blocks finds the ``` spans, left to right, each with non-blank content.
func (r *waRenderer) blocks() []waSpan {
	s := r.s
	var closers []int // positions of "```" that may close
	for i := 0; i+3 <= len(s); i++ {
		if s[i] == '`' && strings.HasPrefix(s[i:], "```") && !wordAfter(s, i+3) {
			closers = append(closers, i)
		}
	}
	var spans []waSpan
	for i := 0; i+3 <= len(s); i++ {
		if s[i] != '`' || !strings.HasPrefix(s[i:], "```") || wordBefore(s, i) {
			continue
		}
		// The first closer past the opener, or the one after it when the
		// content up to the first is blank (then the second's content holds
		// the first's backticks, so it is not blank).
		k := sort.SearchInts(closers, i+4)
		found := -1
		for ; k < len(closers) && found < 0; k++ {
			if strings.TrimSpace(s[i+3:closers[k]]) != "" {
				found = closers[k]
			}
		}
		if found < 0 {
			continue
		}
		spans = append(spans, waSpan{i, found})
		i = found + 2
	}
	return spans
}

// text renders s[lo:hi], which holds no ``` span, line by line.
func (r *waRenderer) text(lo, hi int) {
	s := r.s
	for p := lo; ; {
		if p == 0 || (p > lo && s[p-1] == '\n') {
			p = r.lineStart(p, hi)
		}
		end := strings.IndexByte(s[p:hi], '\n')
		if end < 0 {
			r.line(p, hi)
			return
		}
		end += p
		r.line(p, end)
		r.newline(end+1, hi)
		p = end + 1
	}
}

// isQuote reports whether the line starting at p (before hi) is a quote.
func (r *waRenderer) isQuote(p, hi int) bool {
	return hi-p >= 2 && r.s[p] == '>' && r.s[p+1] == ' '
}

// newline renders the line break before the line starting at next.
func (r *waRenderer) newline(next, hi int) {
	quote := r.isQuote(next, hi)
	switch {
	case r.inQuote && !quote:
		r.out.WriteString("</blockquote>") // the block ends the line
		r.inQuote = false
	case r.noBreak:
	default:
		r.out.WriteString("<br>")
	}
	r.noBreak = false
}

// lineStart opens a quote for a quote line and returns where its text
// starts. A quote opens only on a line with text: "> " alone is literal.
func (r *waRenderer) lineStart(p, hi int) int {
	if !r.isQuote(p, hi) {
		return p
	}
	if !r.inQuote {
		rest := r.s[p+2:]
		if nl := strings.IndexByte(rest, '\n'); nl >= 0 {
			rest = rest[:nl]
		}
		if strings.TrimSpace(rest) == "" {
			return p
		}
		r.out.WriteString("<blockquote>")
		r.inQuote = true
		r.changed = true
	}
	return p + 2
}

var waMarkers = [3]byte{'*', '_', '~'}
var waTags = [3]string{"b", "i", "s"}

func markerIndex(c byte) int {
	switch c {
	case '*':
		return 0
	case '_':
		return 1
	case '~':
		return 2
	}
	return -1
}

// line renders one line's text s[lo:hi] (no newline, no ``` span).
func (r *waRenderer) line(lo, hi int) {
	if lo >= hi {
		return
	}
	r.noBreak = false
	s := r.s
	// Inline code first: markers inside it mean nothing.
	r.code = nil
	var codeClosers []int
	for i := lo + 1; i < hi; i++ {
		if s[i] == '`' && closes(s, i, hi) {
			codeClosers = append(codeClosers, i)
		}
	}
	inCode := func(int) bool { return false }
	var codeSpans []waSpan
	for i := lo; i < hi && len(codeClosers) > 0; i++ {
		if s[i] != '`' || !opens(s, i, hi) {
			continue
		}
		k := sort.SearchInts(codeClosers, i+2)
		if k == len(codeClosers) {
			break
		}
		if r.code == nil {
			r.code = map[int]int{}
		}
		r.code[i] = codeClosers[k]
		codeSpans = append(codeSpans, waSpan{i, codeClosers[k]})
		i = codeClosers[k]
	}
	if len(codeSpans) > 0 {
		inCode = func(p int) bool {
			k := sort.Search(len(codeSpans), func(k int) bool { return codeSpans[k].end >= p })
			return k < len(codeSpans) && codeSpans[k].start <= p
		}
	}
	for m := range r.closers {
		r.closers[m] = r.closers[m][:0]
	}
	for i := lo + 1; i < hi; i++ {
		if m := markerIndex(s[i]); m >= 0 && closes(s, i, hi) && !inCode(i) {
			r.closers[m] = append(r.closers[m], i)
		}
	}
	r.inline(lo, hi, hi)
}

// inline renders s[lo:hi]; lineEnd bounds what the boundary checks see.
func (r *waRenderer) inline(lo, hi, lineEnd int) {
	s := r.s
	lit := lo
	flush := func(to int) {
		r.out.WriteString(html.EscapeString(s[lit:to]))
	}
	for i := lo; i < hi; {
		c := s[i]
		if c == '`' {
			if end, ok := r.code[i]; ok && end < hi {
				flush(i)
				r.out.WriteString("<code>" + html.EscapeString(s[i+1:end]) + "</code>")
				r.changed = true
				i = end + 1
				lit = i
				continue
			}
		} else if m := markerIndex(c); m >= 0 && opens(s, i, lineEnd) {
			cl := r.closers[m]
			k := sort.SearchInts(cl, i+2)
			if k < len(cl) && cl[k] < hi {
				end := cl[k]
				flush(i)
				r.out.WriteString("<" + waTags[m] + ">")
				r.inline(i+1, end, lineEnd)
				r.out.WriteString("</" + waTags[m] + ">")
				r.changed = true
				i = end + 1
				lit = i
				continue
			}
		}
		i++
	}
	flush(hi)
}

// opens reports whether the marker at i may open: at a word boundary and
// hugging the text after it. A doubled marker is not markup ("**", "__init__").
func opens(s string, i, lineEnd int) bool {
	if wordBefore(s, i) || i+1 >= lineEnd || (i > 0 && s[i-1] == s[i]) {
		return false
	}
	next, _ := utf8.DecodeRuneInString(s[i+1 : lineEnd])
	return !unicode.IsSpace(next) && next != rune(s[i])
}

// closes reports whether the marker at i may close: hugging the text before
// it and at a word boundary, and not doubled.
func closes(s string, i, lineEnd int) bool {
	prev, _ := utf8.DecodeLastRuneInString(s[:i])
	if unicode.IsSpace(prev) || prev == rune(s[i]) {
		return false
	}
	if i+1 < lineEnd {
		next, _ := utf8.DecodeRuneInString(s[i+1 : lineEnd])
		return !isWordRune(next) && next != rune(s[i])
	}
	return true
}

func isWordRune(c rune) bool { return unicode.IsLetter(c) || unicode.IsDigit(c) }

// wordBefore reports whether a letter or digit precedes position i.
func wordBefore(s string, i int) bool {
	if i == 0 {
		return false
	}
	c, _ := utf8.DecodeLastRuneInString(s[:i])
	return isWordRune(c)
}

// wordAfter reports whether a letter or digit follows position i.
func wordAfter(s string, i int) bool {
	if i >= len(s) {
		return false
	}
	c, _ := utf8.DecodeRuneInString(s[i:])
	return isWordRune(c)
}
