package ircmsg

import (
	"strings"
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
// longer than a whole message is cut at the last UTF-8 character boundary
// that fits. No chunk is empty or blank, none holds CR, LF or NUL, and a
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
		s = trimLeftBlanks(s[cut:])
	}
	if s != "" {
		out = append(out, s)
	}
	return out
}

// breakAt returns where to cut s, which is longer than budget: at the last
// blank that leaves at most budget bytes before it, else at the last
// character boundary within budget. The result is at least 1, since budget
// is at least utf8.UTFMax.
func breakAt(s string, budget int) int {
	// s[budget] exists; a blank there means s[:budget] fits whole.
	for i := budget; i > 0; i-- {
		if s[i] == ' ' || s[i] == '\t' {
			return i
		}
	}
	// Decode forward: an invalid byte counts as one character, so invalid
	// input still makes progress, and valid input is cut only between
	// characters.
	cut := 0
	for {
		_, n := utf8.DecodeRuneInString(s[cut:])
		if cut+n > budget {
			return cut
		}
		cut += n
	}
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
