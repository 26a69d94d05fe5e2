package ircmsg

import (
	"fmt"
	"slices"
	"strings"
)

func invalid(reason string) error { return fmt.Errorf("%w: %s", ErrInvalid, reason) }

// Validate reports whether m can be written as one line that a server reads
// back as the same message: a valid command; a source and tag keys without
// separators; no CR, LF or NUL anywhere (tag values may hold CR and LF,
// which are escaped); middle parameters non-empty, without spaces and not
// starting with ':'; and both parts of the line within their limits.
func (m *Message) Validate() error {
	if !validCommand(m.Command) {
		return invalid("command is not letters or a three-digit numeric")
	}
	if strings.ContainsAny(m.Source, " \r\n\x00") {
		return invalid("source contains a space, CR, LF or NUL")
	}
	if len(m.Tags) > 0 {
		n := 1 // '@'
		for k, v := range m.Tags {
			if k == "" || strings.ContainsAny(k, " ;=\r\n\x00") {
				return invalid("tag key is empty or contains a separator, CR, LF or NUL")
			}
			if strings.IndexByte(v, 0) >= 0 {
				return invalid("tag value contains NUL")
			}
			n += len(k) + 1 // the key, then ';' or the closing space
			if v != "" {
				n += 1 + escapedLen(v)
			}
		}
		if n > MaxTagsLen {
			return fmt.Errorf("%w: tags section over %d bytes", ErrTooLong, MaxTagsLen)
		}
	}
	n := len(m.Command)
	if m.Source != "" {
		n += 1 + len(m.Source) + 1
	}
	last := len(m.Params) - 1
	for i, p := range m.Params {
		if strings.ContainsAny(p, "\r\n\x00") {
			return invalid(fmt.Sprintf("parameter %d contains CR, LF or NUL", i))
		}
		n += 1 + len(p)
		if i == last {
			if needsColon(p) {
				n++
			}
			continue
		}
		if p == "" || p[0] == ':' || strings.IndexByte(p, ' ') >= 0 {
			return invalid(fmt.Sprintf("parameter %d is not the last yet is empty, has a space or starts with ':'", i))
		}
	}
	if n+2 > MaxLineLen {
		return fmt.Errorf("%w: over %d bytes", ErrTooLong, MaxLineLen)
	}
	return nil
}

// Marshal returns the line for m, without CRLF, or the error from Validate.
// This is the writer for anything built from outside input.
func (m *Message) Marshal() (string, error) {
	if err := m.Validate(); err != nil {
		return "", err
	}
	return m.String(), nil
}

// String returns the line for m without CRLF. Like AppendTo it does not
// validate; it is meant for logs and tests.
func (m *Message) String() string {
	return string(m.AppendTo(make([]byte, 0, m.sizeHint())))
}

// sizeHint estimates the written length, ignoring escapes, so that String
// allocates once for the line rather than growing it.
func (m *Message) sizeHint() int {
	n := len(m.Command) + 2*len(m.Params) + len(m.Source) + 2
	for k, v := range m.Tags {
		n += len(k) + len(v) + 2
	}
	for _, p := range m.Params {
		n += len(p)
	}
	return n + 1
}

// AppendTo appends the line for m, without CRLF, to b. Tags are written in
// key order so output is deterministic; the command is upper-cased; the
// last parameter gets a ':' only when it needs one.
//
// AppendTo does not validate, so that a writer that has called Validate
// once pays nothing more. For an invalid message the line may not mean what
// was intended, but it never contains CR, LF or NUL (they become spaces), so
// it can never carry a second command.
func (m *Message) AppendTo(b []byte) []byte {
	if len(m.Tags) > 0 {
		var buf [16]string
		keys := buf[:0]
		for k := range m.Tags {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '@')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ';')
			}
			b = appendClean(b, k)
			if v := m.Tags[k]; v != "" {
				b = append(b, '=')
				b = appendEscaped(b, v)
			}
		}
		b = append(b, ' ')
	}
	if m.Source != "" {
		b = append(b, ':')
		b = appendClean(b, m.Source)
		b = append(b, ' ')
	}
	for i := 0; i < len(m.Command); i++ {
		c := m.Command[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		b = appendCleanByte(b, c)
	}
	for i, p := range m.Params {
		b = append(b, ' ')
		if i == len(m.Params)-1 && needsColon(p) {
			b = append(b, ':')
		}
		b = appendClean(b, p)
	}
	return b
}

// needsColon reports whether a last parameter must be written as trailing.
func needsColon(p string) bool {
	return p == "" || p[0] == ':' || strings.IndexByte(p, ' ') >= 0
}

func appendClean(b []byte, s string) []byte {
	if strings.IndexAny(s, "\r\n\x00") < 0 {
		return append(b, s...)
	}
	for i := 0; i < len(s); i++ {
		b = appendCleanByte(b, s[i])
	}
	return b
}

func appendCleanByte(b []byte, c byte) []byte {
	if c == '\r' || c == '\n' || c == 0 {
		c = ' '
	}
	return append(b, c)
}

// tagEscape maps each byte that must be escaped in a tag value to the
// letter after the backslash. NUL cannot be escaped; AppendTo writes it as
// a space, Validate refuses it.
var tagEscape = [256]byte{';': ':', ' ': 's', '\\': '\\', '\r': 'r', '\n': 'n', 0: 's'}

func escapedLen(v string) int {
	n := len(v)
	for i := 0; i < len(v); i++ {
		if tagEscape[v[i]] != 0 {
			n++
		}
	}
	return n
}

func appendEscaped(b []byte, v string) []byte {
	start := 0
	for i := 0; i < len(v); i++ {
		if e := tagEscape[v[i]]; e != 0 {
			b = append(b, v[start:i]...)
			b = append(b, '\\', e)
			start = i + 1
		}
	}
	return append(b, v[start:]...)
}
