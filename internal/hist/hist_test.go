package hist

import (
	"sync"
	"testing"
	"time"
)

func TestBucketsCoverAndOrder(t *testing.T) {
	prev := -1
	for _, n := range []uint64{0, 1, 3, 4, 5, 7, 8, 1000, 1 << 20, 1<<40 + 12345, 1<<63 - 1} {
		b := bucket(n)
		if b < prev {
			t.Fatalf("bucket(%d) = %d, below the previous %d", n, b, prev)
		}
		prev = b
		if up := upper(b); uint64(up) < n || (n >= 8 && float64(up) > 1.25*float64(n)+1) {
			t.Fatalf("bucket(%d) = %d with upper bound %d: not within 25%%", n, b, up)
		}
		if b > 0 && uint64(upper(b-1)) >= n {
			t.Fatalf("n %d also fits the bucket before %d (upper %d)", n, b, upper(b-1))
		}
	}
}

func TestPercentiles(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < 1000; i += 4 {
				h.Observe(time.Duration(i+1) * time.Microsecond) // 1µs..1000µs
			}
		}()
	}
	wg.Wait()
	p := h.Read()
	within := func(got, want time.Duration) bool { return got >= want && float64(got) <= 1.25*float64(want) }
	if p.Count != 1000 || p.Max != 1000*time.Microsecond || !within(p.P50, 500*time.Microsecond) ||
		!within(p.P90, 900*time.Microsecond) || !within(p.P99, 990*time.Microsecond) {
		t.Fatalf("got %+v", p)
	}
	if (&Histogram{}).Read() != (Percentiles{}) {
		t.Fatal("an empty histogram reads non-zero")
	}
}
