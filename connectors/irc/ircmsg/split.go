package ircmsg

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// splitOverhead is what surrounds a chunk in the line other clients
// receive, besides the prefix and target: ":" prefix " PRIVMSG " target
// " :" chunk CRLF. NOTICE is shorter than PRIVMSG, so the same budget
// serves both.
const splitOverhead = len(":") + len(" PRIVMSG ") + len(" :") + len("\r\n")

// SplitText cuts text into chunks to send as PRIVMSG or NOTICE to target,
// so that each line as relayed to others, ":prefix PRIVMSG target :chunk"
// plus CRLF, is at most maxLine bytes (MaxLineLen when maxLine <= 0).
// prefixLen is the length of "nick!user@host" as other users see it, not
// counting ':'; when the host is unknown (cloaks, vhosts), overestimate.
// Client tags travel in their own budget and are not counted.
//
// Each line of text (split at LF, CRLF or CR) is sent as its own messages;
// lines holding only spaces and tabs are dropped, and NUL bytes, which IRC
// cannot carry, are removed. A line too long for one message is cut at the
// last space or tab that fits, the run of blanks there being dropped; a word
// longer than a whole message is cut at the last grapheme cluster boundary
// that fits (see graphemeBoundary: an emoji sequence, a flag or a letter
// with its accents stays whole), or, for a single cluster longer than a
// message, at the last UTF-8 character boundary. No chunk is empty or blank, none holds CR, LF or NUL, and a
// chunk of valid UTF-8 input is valid UTF-8.
//
// A CTCP message (see ParseCTCP), such as Action's output, has its
// arguments split instead and every chunk wrapped again, so a long /me stays
// a series of /me.
//
// SplitText returns nil when there is nothing to send, or when target and
// prefix leave no room for even one character.
func SplitText(prefixLen int, target, text string, maxLine int) []string {
	if maxLine <= 0 {
		maxLine = MaxLineLen
	}
	budget := maxLine - splitOverhead - max(prefixLen, 0) - len(target)
	cmd, args, ok := ParseCTCP(text)
	if !ok {
		return splitLines(text, budget)
	}
	open := "\x01" + cmd + " "
	chunks := splitLines(args, budget-len(open)-len("\x01"))
	if chunks == nil {
		// Either no arguments (a bare CTCP such as VERSION, or an empty
		// ACTION) or no room for any.
		if strings.Trim(args, " \t\r\n\x00") == "" && len(cmd)+2 <= budget {
			return []string{"\x01" + cmd + "\x01"}
		}
		return nil
	}
	for i, c := range chunks {
		chunks[i] = open + c + "\x01"
	}
	return chunks
}

// splitLines splits text into lines, then each line into chunks of at most
// budget bytes.
func splitLines(text string, budget int) []string {
	// Below this a four-byte character could never fit.
	if budget < utf8.UTFMax {
		return nil
	}
	var out []string
	for text != "" {
		line := text
		text = ""
		if i := strings.IndexAny(line, "\r\n"); i >= 0 {
			next := i + 1
			if line[i] == '\r' && next < len(line) && line[next] == '\n' {
				next++
			}
			line, text = line[:i], line[next:]
		}
		if strings.IndexByte(line, 0) >= 0 {
			line = strings.ReplaceAll(line, "\x00", "")
		}
		if isBlank(line) {
			continue
		}
		out = splitLine(out, line, budget)
	}
	return out
}

// splitLine appends the chunks of one non-blank line to out. Leading blanks
// of the line survive (indentation), as does anything that fits whole.
func splitLine(out []string, s string, budget int) []string {
	for len(s) > budget {
		cut := breakAt(s, budget)
		if chunk := trimRightBlanks(s[:cut]); chunk != "" {
			out = append(out, chunk)
		}
		// The blanks after the cut go, unless a mark attaches to the
		// last of them.
		s = s[cut:]
		if rest := trimLeftBlanks(s); graphemeBoundary(s, len(s)-len(rest)) {
			s = rest
		}
	}
	if s != "" {
		out = append(out, s)
	}
	return out
}

// breakAt returns where to cut s, which is longer than budget: at the last
// blank that leaves at most budget bytes before it and does not start a
// cluster (a space carrying a combining mark), else at the last cluster
// boundary within budget, else at the last character boundary. The
// result is at least 1, since budget is at least utf8.UTFMax.
func breakAt(s string, budget int) int {
	// s[budget] exists; a blank there means s[:budget] fits whole.
	for i := budget; i > 0; i-- {
		if s[i] == ' ' || s[i] == '\t' {
			if graphemeBoundary(s, len(s)-len(trimLeftBlanks(s[i:]))) {
				return i
			}
		}
	}
	// Decode forward: an invalid byte counts as one character, so invalid
	// input still makes progress, and valid input is cut only between
	// characters.
	cut := 0
	for {
		_, n := utf8.DecodeRuneInString(s[cut:])
		if cut+n > budget {
			break
		}
		cut += n
	}
	for c := cut; c > 0; {
		if graphemeBoundary(s, c) {
			return c
		}
		_, n := utf8.DecodeLastRuneInString(s[:c])
		c -= n
	}
	return cut // one cluster longer than a whole message
}

// graphemeBoundary reports whether s may be cut at byte i without
// splitting a user-perceived character, after Unicode's extended grapheme
// cluster rules (UAX #29) for what chat text holds: nothing attaches to a
// control character; combining and spacing marks, ZWJ, variation
// selectors, emoji skin-tone modifiers and tag characters attach to what
// precedes them; a pictograph after a ZWJ joins its sequence (families,
// professions); regional indicators pair up into flags. Hangul jamo and
// prepended concatenation marks are not handled: chat text holds
// precomposed syllables, and the marks are rare. i must be a character
// boundary.
func graphemeBoundary(s string, i int) bool {
	if i <= 0 || i >= len(s) {
		return true
	}
	r1, _ := utf8.DecodeLastRuneInString(s[:i])
	r2, _ := utf8.DecodeRuneInString(s[i:])
	switch {
	case isControl(r1) || isControl(r2):
		return true
	case isExtend(r2):
		return false
	case r1 == zwj && isPictographic(r2):
		return false
	case isRegionalIndicator(r1) && isRegionalIndicator(r2):
		// Inside a run of indicators, a cut may fall only between pairs.
		n := 0
		for j := i; j > 0; {
			r, size := utf8.DecodeLastRuneInString(s[:j])
			if !isRegionalIndicator(r) {
				break
			}
			n++
			j -= size
		}
		return n%2 == 0
	}
	return true
}

const zwj = '\u200d'

func isControl(r rune) bool { return r < 0x20 || r >= 0x7f && r < 0xa0 }

// isExtend reports whether r attaches to the character before it.
func isExtend(r rune) bool {
	switch {
	case r < 0x300:
		return false
	case r == zwj, r == '\u200c', // joiners
		r >= 0xfe00 && r <= 0xfe0f, r >= 0xe0100 && r <= 0xe01ef, // variation selectors
		r >= 0x1f3fb && r <= 0x1f3ff, // skin tones
		r >= 0xe0020 && r <= 0xe007f: // tags (subdivision flags)
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Mc)
}

func isRegionalIndicator(r rune) bool { return r >= 0x1f1e6 && r <= 0x1f1ff }

// isPictographic approximates Extended_Pictographic: the emoji blocks and
// the older symbol blocks emoji come from.
func isPictographic(r rune) bool {
	return r >= 0x1f000 && r <= 0x1faff || r >= 0x2190 && r <= 0x2bff ||
		r == 0xa9 || r == 0xae || r == 0x203c || r == 0x2049 || r == 0x2122 || r == 0x2139 ||
		r == 0x3030 || r == 0x303d || r == 0x3297 || r == 0x3299
}

func isBlank(s string) bool { return trimLeftBlanks(s) == "" }

func trimLeftBlanks(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	return s
}

func trimRightBlanks(s string) string {
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// Action returns text as a CTCP ACTION (what /me sends). \x01 bytes are
// removed from text, since one would end the CTCP early.
func Action(text string) string {
	text = strings.ReplaceAll(text, "\x01", "")
	if text == "" {
		return "\x01ACTION\x01"
	}
	return "\x01ACTION " + text + "\x01"
}

// ParseCTCP reads a CTCP message: \x01, a command, optionally a space and
// arguments, then \x01, which some clients omit. ok is false for anything
// else, including text with a \x01 inside, or a command that is empty or
// holds NUL, CR or LF. The command is returned as sent; compare it with
// strings.EqualFold.
func ParseCTCP(text string) (command, args string, ok bool) {
	if len(text) < 2 || text[0] != '\x01' {
		return "", "", false
	}
	body := strings.TrimSuffix(text[1:], "\x01")
	if strings.IndexByte(body, '\x01') >= 0 {
		return "", "", false
	}
	command, args, _ = strings.Cut(body, " ")
	if command == "" || strings.ContainsAny(command, "\x00\r\n") {
		return "", "", false
	}
	return command, args, true
}
