package whatsapp

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/html"
)

func TestWAToHTML(t *testing.T) {
	tests := []struct {
		in, want string
		changed  bool
	}{
		// Each style.
		{"*bold*", "<b>bold</b>", true},
		{"_italic_", "<i>italic</i>", true},
		{"~strike~", "<s>strike</s>", true},
		{"`code`", "<code>code</code>", true},
		{"```mono```", "<code>mono</code>", true},
		{"```line 1\nline 2```", "<pre>line 1\nline 2</pre>", true},
		{"> quoted", "<blockquote>quoted</blockquote>", true},
		{"> one\n> two", "<blockquote>one<br>two</blockquote>", true},
		{"before\n> q\nafter", "before<br><blockquote>q</blockquote>after", true},
		{"> q\n\nafter", "<blockquote>q</blockquote><br>after", true},
		{"> a\n> \n> b", "<blockquote>a<br><br>b</blockquote>", true},
		{"in a *sentence* here", "in a <b>sentence</b> here", true},
		{"*several words in bold*", "<b>several words in bold</b>", true},
		{"(*bold*), _it_.", "(<b>bold</b>), <i>it</i>.", true},
		{"*a* *b*", "<b>a</b> <b>b</b>", true},
		{"_snake_case_", "<i>snake_case</i>", true},
		{"*ünïcödé*", "<b>ünïcödé</b>", true},

		// Nesting.
		{"*_bold italic_*", "<b><i>bold italic</i></b>", true},
		{"_*~all~*_", "<i><b><s>all</s></b></i>", true},
		{"*bold with `code` in it*", "<b>bold with <code>code</code> in it</b>", true},
		{"`*not bold*`", "<code>*not bold*</code>", true},
		{"```*not _it_ either```", "<code>*not _it_ either</code>", true},
		{"```a\n*b*\n> c```", "<pre>a\n*b*\n&gt; c</pre>", true},
		{"```\ncode\n```\nafter", "<pre>\ncode\n</pre>after", true},
		{"x ```a\nb``` y", "x <pre>a\nb</pre> y", true},
		{"> *q*", "<blockquote><b>q</b></blockquote>", true},

		// Not markup.
		{"plain text", "plain text", false},
		{"line 1\nline 2", "line 1<br>line 2", false},
		{"* not bold *", "* not bold *", false},
		{"*not bold *", "*not bold *", false},
		{"* not bold*", "* not bold*", false},
		{"2*3*4", "2*3*4", false},
		{"a*b* c", "a*b* c", false},
		{"*b*c", "*b*c", false},
		{"snake_case_name", "snake_case_name", false},
		{"__init__", "__init__", false},
		{"**", "**", false},
		{"***", "***", false},
		{"~~", "~~", false},
		{"* *", "* *", false},
		{"*", "*", false},
		{"*bold\nnot*", "*bold<br>not*", false},
		{"`a\nb`", "`a<br>b`", false},
		{"``````", "``````", false},
		{"```   ```", "```   ```", false},
		{"x```mono```", "x```mono```", false},
		{"```mono```x", "```mono```x", false},
		{">no space", "&gt;no space", false},
		{"> ", "&gt; ", false},
		{"a > b", "a &gt; b", false},
		{"1 * 2 * 3", "1 * 2 * 3", false},
		{"~/path/to~file", "~/path/to~file", false},
		{"price: 5*", "price: 5*", false},

		// Escaping.
		{"<b>&amp;</b>", "&lt;b&gt;&amp;amp;&lt;/b&gt;", false},
		{"*<i>*", "<b>&lt;i&gt;</b>", true},
		{`"quote" 'apos'`, "&#34;quote&#34; &#39;apos&#39;", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, changed := waToHTML(tt.in)
		if got != tt.want || changed != tt.changed {
			t.Errorf("waToHTML(%q) = %q, %v; want %q, %v", tt.in, got, changed, tt.want, tt.changed)
		}
	}
}

func TestHTMLToWA(t *testing.T) {
	tests := []struct{ in, want string }{
		// The neutral subset.
		{"<b>bold</b>", "*bold*"},
		{"<i>it</i> and <s>gone</s>", "_it_ and ~gone~"},
		{"<code>x := 1</code>", "`x := 1`"},
		{"<pre>a\nb</pre>", "```a\nb```"},
		{"a<br>b<br/>c", "a\nb\nc"},
		{"<blockquote>q1<br>q2</blockquote>after", "> q1\n> q2\nafter"},
		{"before<blockquote>q</blockquote>", "before\n> q"},

		// What Matrix clients send.
		{"<strong>s</strong> <em>e</em> <del>d</del> <strike>k</strike>", "*s* _e_ ~d~ ~k~"},
		{"<p>one</p><p>two</p>", "one\n\ntwo"},
		{"<p>one</p>\n<p>two</p>\n", "one\n\ntwo"},
		{"<mx-reply><blockquote><a href=\"https://matrix.to/#/!room/$ev\">In reply to</a> <a href=\"https://matrix.to/#/@bob:ex.org\">@bob</a><br>original</blockquote></mx-reply>the answer", "the answer"},
		{"<pre><code class=\"language-go\">func main() {\n}\n</code></pre>", "```func main() {\n}```"},
		{"<p>text</p><pre><code>x\n</code></pre><p>more</p>", "text\n\n```x```\n\nmore"},
		{"<ul>\n<li>one</li>\n<li>two</li>\n</ul>\n", "- one\n- two"},
		{"<ol><li>one</li><li>two</li></ol>", "1. one\n2. two"},
		{"<ol start=\"3\"><li>three</li><li>four</li></ol>", "3. three\n4. four"},
		{"<ul><li>a<ul><li>b</li></ul></li><li>c</li></ul>", "- a\n  - b\n- c"},
		{"<ul><li><p>loose</p></li></ul>", "- loose"},
		{"<ul><li>one<li>two</ul>", "- one\n- two"},
		{"intro<ul><li>x</li></ul>outro", "intro\n- x\noutro"},
		{"<h1>Title</h1>body", "*Title*\nbody"},
		{"<a href=\"https://example.org\">site</a>", "site (https://example.org)"},
		{"<a href=\"https://example.org/\">https://example.org/</a>", "https://example.org/"},
		{"<a href=\"https://example.org\">example.org</a>", "example.org"},
		{"<a href=\"mailto:a@b.c\">a@b.c</a>", "a@b.c"},
		{"<a href=\"https://matrix.to/#/@ann:example.org\">Ann</a>: hi", "Ann: hi"},
		{"<a>no href</a>", "no href"},
		{"<a href=\"https://x.y\"></a>", "https://x.y"},
		{"<b><a href=\"https://x.y\">bold link</a></b>", "*bold link (https://x.y)*"},
		{"<img src=\"mxc://x/y\" alt=\":party:\"> yay", ":party: yay"},
		{"<font color=\"red\">red</font> <span data-mx-spoiler>spoiler</span> <u>under</u>", "red spoiler under"},
		{"<script>alert(1)</script>safe", "safe"},
		{"<hr>", "———"},
		{"a<hr>b", "a\n———\nb"},
		{"<meta charset=\"utf-8\">a<wbr>b<input value=\"x\">", "ab"},
		{"<b/>x<p/>y", "x\n\ny"},

		// Blocks inside inline elements still break the line.
		{"<b><p>a</p></b>b", "*a*\n\nb"},
		{"x<b><p>a</p></b>", "x\n\n*a*"},
		{"<b><h2>Title</h2></b>body", "*Title*\nbody"},
		{"<a href=\"https://x.y\"><div>card</div></a>after", "card (https://x.y)\nafter"},
		{"<ul><li><b><p>x</p></b></li></ul>", "- *x*"},

		// Markers must hug the text and stay on one line.
		{"<b> spaced </b>", " *spaced* "},
		{"<b>one<br>two</b>", "*one*\n*two*"},
		{"<b>a<br><br>b</b>", "*a*\n\n*b*"},
		{"<b></b>x", "x"},
		{"<b>  </b>x", "  x"},
		{"<b><b>twice</b></b>", "*twice*"},
		{"<b><strong>twice</strong></b>", "*twice*"},
		{"<b><i>both</i></b>", "*_both_*"},
		{"<i>a <b>b</b> c</i>", "_a *b* c_"},
		{"<code>a*b_c</code>", "`a*b_c`"},
		{"<code><b>not bold</b></code>", "`not bold`"},
		{"<code>has ` tick</code>", "```has ` tick```"},
		{"<code> padded </code>", "``` padded ```"},
		{"<code></code>", ""},
		{"<pre></pre>", ""},

		// Entities, broken HTML, text.
		{"a &lt; b &amp;&amp; c &gt; d &quot;e&quot; &#39;f&#39; &nbsp;", "a < b && c > d \"e\" 'f' \u00a0"},
		{"plain\ntext with a newline", "plain text with a newline"},
		{"<b>unclosed", "*unclosed*"},
		{"stray</b> end", "stray end"},
		{"</p>x", "x"},
		{"a</p>b", "a\nb"},
		{"<b>a<i>b</b>c</i>", "*a_b_*c"},
		{"<<>>", "<<>>"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := htmlToWA(tt.in); got != tt.want {
			t.Errorf("htmlToWA(%q)\n got %q\nwant %q", tt.in, got, tt.want)
		}
	}
}

// TestFormatRoundTrip: markup rendered as HTML and back is the markup
// itself, for every style WhatsApp has.
func TestFormatRoundTrip(t *testing.T) {
	for _, wa := range []string{
		"*bold*",
		"_italic_",
		"~strike~",
		"`code`",
		"```block\nof code```",
		"> quote",
		"> line 1\n> line 2",
		"> a\n> \n> b",
		"text\n> quote\nmore text",
		"text\n\n> quote\n\nmore text",
		"*_bold italic_*",
		"_*~all three~*_",
		"*bold with `code`*",
		"mixed *bold*, _italic_ and ~strike~ in (a) sentence.",
		"line 1\nline 2\n\nline 4",
		"before\n```a\nb```\nafter",
		"> *bold quote* and `code`",
		"a < b & c > d \"quoted\" 'single'",
		"2*3*4 and snake_case_name stay",
		"* not bold * and _ not italic _",
		"emoji 😀 *ünïcödé*",
	} {
		h, _ := waToHTML(wa)
		if back := htmlToWA(h); back != wa {
			t.Errorf("round trip of %q via %q gave %q", wa, h, back)
		}
	}
}

// checkWellFormed fails when h opens a tag it does not close, or closes
// one that is not open.
func checkWellFormed(t *testing.T, in, h string) {
	t.Helper()
	z := html.NewTokenizer(strings.NewReader(h))
	var stack []string
	for {
		switch z.Next() {
		case html.ErrorToken:
			if len(stack) > 0 {
				t.Fatalf("waToHTML(%q) = %q leaves %v open", in, h, stack)
			}
			return
		case html.StartTagToken:
			name, _ := z.TagName()
			if string(name) == "br" {
				continue
			}
			stack = append(stack, string(name))
		case html.SelfClosingTagToken:
			t.Fatalf("waToHTML(%q) = %q has a self-closing tag", in, h)
		case html.EndTagToken:
			name, _ := z.TagName()
			if len(stack) == 0 || stack[len(stack)-1] != string(name) {
				t.Fatalf("waToHTML(%q) = %q closes %s while %v is open", in, h, name, stack)
			}
			stack = stack[:len(stack)-1]
		}
	}
}

func TestWAToHTMLWellFormed(t *testing.T) {
	for _, in := range fuzzSeedsWA {
		h, _ := waToHTML(in)
		checkWellFormed(t, in, h)
	}
}

// TestWAToHTMLLinear: adversarial markup renders in about linear time.
func TestWAToHTMLLinear(t *testing.T) {
	for _, unit := range []string{".*a", "._a", "`x", ".```a", "*_~`", "> *a\n"} {
		in := strings.Repeat(unit, 200000/len(unit))
		h, _ := waToHTML(in)
		checkWellFormed(t, in[:20], h)
	}
}

var fuzzSeedsWA = []string{
	"", "*", "**", "*a*", "_a_", "~a~", "`a`", "```a```", "```a\nb```", "> q", "> a\n> b\nc",
	"*_~`a`~_*", "*a _b* c_", "`*a*` *`b`*", "```*a*```*b*", "*a\nb*", "a*b*c", "_a_b_",
	"> ```a\nb```\nc", "```a\n> b```", "x```\n```y", "````a````", "*a**b*", "~~a~~",
	"<b>&amp;\"'", "\xff*\xfe*", "*\u00a0a*", "\r\n*a*\r\n",
}

func FuzzWAToHTML(f *testing.F) {
	for _, s := range fuzzSeedsWA {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		h, changed := waToHTML(in)
		checkWellFormed(t, in, h)
		if !changed && strings.ContainsAny(strings.ReplaceAll(h, "<br>", ""), "<>") {
			t.Fatalf("waToHTML(%q) = %q has tags but says unchanged", in, h)
		}
		// The HTML carries the text: turned back into markup it says the
		// same apart from markers, quote prefixes and white space.
		if back := htmlToWA(h); waLetters(back) != waLetters(in) {
			t.Fatalf("waToHTML(%q) = %q comes back as %q: text lost or added", in, h, back)
		}
	})
}

// waLetters is s without markup characters and white space: what
// converting between markup and HTML must keep.
func waLetters(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || strings.ContainsRune("*_~`>", r) {
			return -1
		}
		return r
	}, s)
}

var fuzzSeedsHTML = []string{
	"", "<b>x</b>", "<mx-reply>x</mx-reply>y", "<ul><li>a<ol><li>b</ol></ul>", "<pre><code>x\n</code></pre>",
	"<a href=x>y</a>", "<blockquote><p>a</p><p>b</p></blockquote>", "<b><i>x</b></i>", "</b></i></a>",
	"<code><pre>x</pre></code>", "<li>orphan", "<ol start=-5><li>x</ol>", "<ol start=99999999999><li>x</ol>",
	"<b>a<br>b</b>", "&amp;&lt;&#0;&#xffffff;", "<script>x", "<mx-reply><mx-reply>a</mx-reply>b</mx-reply>c",
	"<h1><b>x</b></h1>", "<img alt='a\nb'>", "<b><blockquote>x</blockquote></b>",
	"<b><p>a</p></b>b", "x<a href=y><div>c</div></a>z", "<ul><li><i><p>x</p></i><li>y</ul>",
}

func FuzzHTMLToWA(f *testing.F) {
	for _, s := range fuzzSeedsHTML {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		wa := htmlToWA(in)
		if utf8.ValidString(in) && !utf8.ValidString(wa) {
			t.Fatalf("htmlToWA(%q) = %q: invalid UTF-8 from valid input", in, wa)
		}
		// Relaying back and forth keeps the text and settles after one
		// round (```x``` comes back as `x`, then stays so): messages do
		// not drift as they cross bridges.
		h, _ := waToHTML(wa)
		once := htmlToWA(h)
		if waLetters(once) != waLetters(wa) {
			t.Fatalf("htmlToWA(%q) = %q, via %q becomes %q: text lost or added", in, wa, h, once)
		}
		h2, _ := waToHTML(once)
		if twice := htmlToWA(h2); twice != once {
			t.Fatalf("htmlToWA(%q) = %q does not settle: %q, then %q", in, wa, once, twice)
		}
		// Text without tags comes through as it is.
		if !strings.ContainsAny(in, "\r\n") {
			if got := htmlToWA(html.EscapeString(in)); got != in {
				t.Fatalf("htmlToWA(EscapeString(%q)) = %q", in, got)
			}
		}
	})
}
