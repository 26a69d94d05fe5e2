package fakewa

import (
	"context"
	"sync"
)

// mailbox is an unbounded queue a test reads in order: a phone's inbox
// never blocks the server that fills it.
type mailbox[T any] struct {
	mu     sync.Mutex
	items  []T
	next   int
	signal chan struct{}
}

func newMailbox[T any]() *mailbox[T] { return &mailbox[T]{signal: make(chan struct{})} }

func (m *mailbox[T]) push(v T) {
	m.mu.Lock()
	m.items = append(m.items, v)
	close(m.signal)
	m.signal = make(chan struct{})
	m.mu.Unlock()
}

// take returns the next item not yet taken, waiting for one.
func (m *mailbox[T]) take(ctx context.Context) (T, error) {
	for {
		m.mu.Lock()
		if m.next < len(m.items) {
			v := m.items[m.next]
			m.next++
			m.mu.Unlock()
			return v, nil
		}
		sig := m.signal
		m.mu.Unlock()
		select {
		case <-sig:
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
	}
}

// all returns every item pushed so far, taken or not.
func (m *mailbox[T]) all() []T {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]T(nil), m.items...)
}

// waitFor waits until some item pushed so far satisfies ok and returns it.
func (m *mailbox[T]) waitFor(ctx context.Context, ok func(T) bool) (T, error) {
	seen := 0
	for {
		m.mu.Lock()
		for ; seen < len(m.items); seen++ {
			if ok(m.items[seen]) {
				v := m.items[seen]
				m.mu.Unlock()
				return v, nil
			}
		}
		sig := m.signal
		m.mu.Unlock()
		select {
		case <-sig:
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
	}
}
