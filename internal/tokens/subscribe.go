package tokens

import "sync"

// subscriber is one consumer of state changes. Its channel has one slot:
// a newer state replaces one not yet read, so a reader that stalls or never
// reads costs the publisher nothing and always finds the latest state.
type subscriber struct {
	ch chan State
}

// Subscribe returns a channel that delivers the current state at once and then
// every change, latest-wins: a slow reader skips intermediate states but never
// misses the newest. The channel is closed by cancel or by [Manager.Close].
// Calling cancel more than once is harmless.
func (m *Manager) Subscribe() (updates <-chan State, cancel func()) {
	s := &subscriber{ch: make(chan State, 1)}
	m.subMu.Lock()
	defer m.subMu.Unlock()
	if m.closed {
		close(s.ch)
		return s.ch, func() {}
	}
	s.ch <- m.current.Load().view(m.clock.Now())
	m.subs[s] = struct{}{}
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			m.subMu.Lock()
			defer m.subMu.Unlock()
			if _, ok := m.subs[s]; ok {
				delete(m.subs, s)
				close(s.ch)
			}
		})
	}
}

// publish stores snap for readers and offers it to every subscriber. Storing
// and offering happen under subMu so a new subscriber sees either the old
// state followed by the new one, or the new one: never a gap.
func (m *Manager) publish(snap *snapshot) {
	m.subMu.Lock()
	defer m.subMu.Unlock()
	m.current.Store(snap)
	st := snap.state
	for s := range m.subs {
		select {
		case <-s.ch: // drop the unread older state
		default:
		}
		// Only publish sends, under subMu, so the slot is free now.
		s.ch <- st
	}
}

// closeSubscribers ends every subscription; later Subscribe calls get a
// closed channel.
func (m *Manager) closeSubscribers() {
	m.subMu.Lock()
	defer m.subMu.Unlock()
	m.closed = true
	for s := range m.subs {
		close(s.ch)
		delete(m.subs, s)
	}
}
