package whatsapp

import (
	"strconv"
	"strings"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// htmlToWA turns the neutral HTML subset, and what Matrix clients send
// (b/strong, i/em, s/del/strike, code, pre, a, br, p, blockquote, lists,
// headings, mx-reply), into WhatsApp markup. Unknown tags are dropped and
// their text kept; entities are decoded. Markers are placed where WhatsApp
// renders them: hugging the text and never across lines.
func htmlToWA(src string) string {
	c := htmlConv{}
	z := html.NewTokenizer(strings.NewReader(src))
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			for len(c.stack) > 0 {
				c.pop()
			}
			return c.root.b.String()
		case html.TextToken:
			if c.skip == 0 {
				c.text(string(z.Text()))
			}
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			var attrs map[string]string
			for hasAttr {
				var k, v []byte
				k, v, hasAttr = z.TagAttr()
				if attrs == nil {
					attrs = map[string]string{}
				}
				attrs[string(k)] = string(v)
			}
			c.start(string(name), attrs, tt == html.SelfClosingTagToken)
		case html.EndTagToken:
			name, _ := z.TagName()
			c.end(string(name))
		}
	}
}

// waWriter collects markup. Block boundaries are owed newlines (pending),
// written only when more text follows, so blocks never leave trailing or
// leading blank lines.
type waWriter struct {
	b       strings.Builder
	pending int
	quote   int  // open blockquotes: lines get "> "
	marker  bool // a list marker was just written: the item's first block needs no break
	// lead is what was owed before the first text: a frame's buffer
	// hands it on to its parent, so a block inside bold still starts a line.
	lead int
}

// block owes n line breaks before whatever comes next.
func (w *waWriter) block(n int) { w.pending = max(w.pending, n) }

// write writes text, paying owed line breaks first.
func (w *waWriter) write(s string) {
	if s == "" {
		return
	}
	if w.pending > 0 && w.b.Len() == 0 {
		w.lead = max(w.lead, w.pending)
	} else if w.pending > 0 {
		str := w.b.String()
		have := 0
		for have < w.pending && have < len(str) && str[len(str)-1-have] == '\n' {
			have++
		}
		for ; have < w.pending; have++ {
			w.b.WriteByte('\n')
		}
	}
	w.pending = 0
	w.marker = false
	for s != "" {
		if w.quote > 0 && w.atLineStart() {
			w.b.WriteString("> ")
		}
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			w.b.WriteString(s)
			return
		}
		w.b.WriteString(s[:i+1])
		s = s[i+1:]
	}
}

func (w *waWriter) atLineStart() bool {
	n := w.b.Len()
	return n == 0 || w.b.String()[n-1] == '\n'
}

// lastIsSpace reports whether the text so far ends in white space (or is empty).
func (w *waWriter) lastIsSpace() bool {
	n := w.b.Len()
	if n == 0 || w.pending > 0 {
		return true
	}
	c := w.b.String()[n-1]
	return c == ' ' || c == '\n' || c == '\t'
}

type frameKind int

const (
	framePlain frameKind = iota // only tracked, to match its end tag
	frameBlock                  // p, div, headings: line breaks around
	frameQuote
	frameList
	frameItem
	frameStyle // b, i, s: buffered, then wrapped in markers
	frameCode
	framePre
	frameLink
	frameSkip // mx-reply, script, style: dropped with their content
)

type htmlFrame struct {
	tag    string
	kind   frameKind
	w      *waWriter // own buffer for style, code, pre and link frames
	marker string    // style marker
	style  int       // index in htmlConv.styles, or -1
	breaks int       // line breaks owed after a block
	// lists
	ordered bool
	next    int
	// pre
	hadCode bool
	// link
	href string
	link bool // counted in htmlConv.links
}

type htmlConv struct {
	root   waWriter
	stack  []*htmlFrame
	skip   int    // depth of dropped elements
	styles [3]int // open bold, italic, strike frames
	code   int    // open code or pre frames: no markers inside
	links  int
}

// out is where text goes now: the innermost buffering frame, or the root.
func (c *htmlConv) out() *waWriter {
	for i := len(c.stack) - 1; i >= 0; i-- {
		if c.stack[i].w != nil {
			return c.stack[i].w
		}
	}
	return &c.root
}

func (c *htmlConv) text(t string) {
	w := c.out()
	if c.code > 0 && c.inPre() {
		w.write(t)
		return
	}
	// Outside pre, a line break in the source is just white space, and
	// white space between blocks is layout.
	if strings.TrimSpace(t) == "" && strings.ContainsAny(t, "\n\r") {
		if !w.lastIsSpace() {
			w.write(" ")
		}
		return
	}
	w.write(lineBreaksToSpaces.Replace(t))
}

var lineBreaksToSpaces = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ")

func (c *htmlConv) inPre() bool {
	for _, f := range c.stack {
		if f.kind == framePre {
			return true
		}
	}
	return false
}

var styleMarkers = [3]string{"*", "_", "~"}

// maxHTMLDepth bounds nesting: deeper tags are ignored (their text kept),
// which keeps every walk of the stack short on hostile input.
const maxHTMLDepth = 100

func (c *htmlConv) start(tag string, attrs map[string]string, selfClosing bool) {
	if c.skip > 0 {
		if tag == "mx-reply" || tag == "script" || tag == "style" {
			if !selfClosing && len(c.stack) < maxHTMLDepth {
				c.skip++
				c.stack = append(c.stack, &htmlFrame{tag: tag, kind: frameSkip, style: -1})
			}
		}
		return
	}
	w := c.out()
	switch tag {
	case "br":
		w.write("\n")
		return
	case "hr":
		w.block(1)
		w.write("———")
		w.block(1)
		return
	case "img":
		// Custom emoji and inline images: their alt text is all WhatsApp can show.
		if alt := attrs["alt"]; alt != "" {
			c.text(alt)
		}
		return
	}
	if isVoid(tag) || len(c.stack) >= maxHTMLDepth {
		return
	}
	f := &htmlFrame{tag: tag, kind: framePlain, style: -1}
	if c.code > 0 {
		// Inside code everything is literal text.
		if tag == "code" {
			for _, p := range c.stack {
				if p.kind == framePre {
					p.hadCode = true
				}
			}
		}
		if !selfClosing {
			c.stack = append(c.stack, f)
		}
		return
	}
	switch tag {
	case "mx-reply", "script", "style":
		f.kind = frameSkip
		c.skip++
	case "b", "strong", "i", "em", "s", "del", "strike",
		"h1", "h2", "h3", "h4", "h5", "h6":
		idx := map[string]int{"b": 0, "strong": 0, "i": 1, "em": 1, "s": 2, "del": 2, "strike": 2}[tag]
		if tag[0] == 'h' && len(tag) == 2 {
			// Headings: a bold line of their own.
			w.block(1)
			f.breaks = 1
			idx = 0
		}
		if c.styles[idx] == 0 {
			f.kind = frameStyle
			f.w = &waWriter{}
			f.marker = styleMarkers[idx]
		}
		f.style = idx
		c.styles[idx]++
	case "code":
		f.kind = frameCode
		f.w = &waWriter{}
		c.code++
	case "pre":
		f.kind = framePre
		f.w = &waWriter{}
		c.code++
		w.block(1)
	case "a":
		if c.links == 0 {
			f.kind = frameLink
			f.w = &waWriter{}
			f.href = attrs["href"]
		}
		f.link = true
		c.links++
	case "p", "div", "section", "article", "header", "footer", "table", "tr", "details", "summary", "figure":
		f.kind = frameBlock
		f.breaks = 1
		if tag == "p" {
			f.breaks = 2
		}
		if !w.marker { // a list item's first paragraph stays on the marker's line
			w.block(f.breaks)
		}
	case "blockquote":
		f.kind = frameQuote
		w.block(1)
		w.quote++
	case "ul", "ol":
		f.kind = frameList
		f.ordered = tag == "ol"
		f.next = 1
		if s, err := strconv.Atoi(attrs["start"]); err == nil && f.ordered && s >= 0 && s < 1e9 {
			f.next = s
		}
		w.block(1)
	case "li":
		// An unclosed previous item ends here.
		for i := len(c.stack) - 1; i >= 0 && c.stack[i].kind != frameList; i-- {
			if c.stack[i].kind == frameItem {
				for len(c.stack) > i {
					c.pop()
				}
				break
			}
		}
		w = c.out()
		f.kind = frameItem
		depth, marker := 0, "- "
		for i := len(c.stack) - 1; i >= 0; i-- {
			if c.stack[i].kind != frameList {
				continue
			}
			if depth == 0 && c.stack[i].ordered {
				marker = strconv.Itoa(c.stack[i].next) + ". "
				c.stack[i].next++
			}
			depth++
		}
		w.block(1)
		w.write(strings.Repeat("  ", max(depth-1, 0)) + marker)
		w.marker = true
	}
	if selfClosing {
		c.stack = append(c.stack, f)
		c.pop()
		return
	}
	c.stack = append(c.stack, f)
}

func isVoid(tag string) bool {
	switch atom.Lookup([]byte(tag)) {
	case atom.Area, atom.Base, atom.Col, atom.Embed, atom.Input, atom.Link, atom.Meta, atom.Source, atom.Track, atom.Wbr:
		return true
	}
	return false
}

func (c *htmlConv) end(tag string) {
	for i := len(c.stack) - 1; i >= 0; i-- {
		if c.stack[i].tag == tag {
			for len(c.stack) > i {
				c.pop()
			}
			return
		}
		if c.stack[i].kind == frameSkip {
			return // inside dropped content, only its own end tag counts
		}
	}
	// An end tag with no start: "</p>" alone still ends a paragraph.
	if c.skip == 0 && (tag == "p" || tag == "div") {
		c.out().block(1)
	}
}

// pop closes the innermost frame, handing buffered text to the parent.
func (c *htmlConv) pop() {
	f := c.stack[len(c.stack)-1]
	c.stack = c.stack[:len(c.stack)-1]
	if f.style >= 0 {
		c.styles[f.style]--
	}
	if f.link {
		c.links--
	}
	parent := c.out()
	switch f.kind {
	case frameSkip:
		c.skip--
	case frameStyle:
		handOn(parent, f.w, wrapLines(f.w.b.String(), f.marker))
	case frameCode:
		c.code--
		body := f.w.b.String()
		if strings.TrimSpace(body) == "" {
			parent.write(body)
		} else if strings.ContainsAny(body, "`\n") || strings.TrimSpace(body) != body {
			parent.write("```" + body + "```")
		} else {
			parent.write("`" + body + "`")
		}
	case framePre:
		c.code--
		body := f.w.b.String()
		if f.hadCode {
			// Matrix clients end <pre><code> with a newline.
			body = strings.TrimSuffix(body, "\n")
		}
		if strings.TrimSpace(body) != "" {
			parent.write("```" + body + "```")
		} else {
			parent.write(body)
		}
		parent.block(1)
	case frameLink:
		handOn(parent, f.w, linkText(f.w.b.String(), f.href))
	case frameBlock, frameList, frameItem:
		parent.block(max(f.breaks, 1))
	case frameQuote:
		parent.quote--
		parent.block(1)
	case framePlain:
		if f.breaks > 0 { // a heading nested in bold
			parent.block(f.breaks)
		}
	}
	if f.kind == frameStyle && f.breaks > 0 {
		parent.block(f.breaks)
	}
}

// handOn writes s, the text of buffer w, to parent with the line breaks
// blocks inside w owe before and after it (none before a list item's
// first block: the marker starts its line).
func handOn(parent, w *waWriter, s string) {
	if !parent.marker {
		parent.block(w.lead)
	}
	parent.write(s)
	parent.block(w.pending)
}

// wrapLines puts marker around each line of s, outside its surrounding
// white space, since WhatsApp markers must hug the text and stay on a line.
func wrapLines(s, marker string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		core := strings.TrimSpace(l)
		if core == "" {
			continue
		}
		lead := l[:strings.Index(l, core)]
		trail := l[len(lead)+len(core):]
		lines[i] = lead + marker + core + marker + trail
	}
	return strings.Join(lines, "\n")
}

// linkText shows a link as its text and, when that is not the address
// itself, the address in parentheses. Matrix mentions (matrix.to links to
// users) show as their text alone.
func linkText(text, href string) string {
	href = strings.TrimSpace(href)
	switch {
	case href == "":
		return text
	case strings.TrimSpace(text) == "":
		return href
	case strings.HasPrefix(href, "https://matrix.to/#/@"):
		return text
	case sameLink(text, href):
		return text
	}
	return text + " (" + href + ")"
}

func sameLink(text, href string) bool {
	norm := func(s string) string {
		s = strings.ToLower(strings.TrimSpace(s))
		for _, p := range []string{"https://", "http://", "mailto:", "tel:"} {
			s = strings.TrimPrefix(s, p)
		}
		return strings.TrimSuffix(s, "/")
	}
	return norm(text) == norm(href)
}
