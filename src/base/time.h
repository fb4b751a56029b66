/* time.h — monotonic and wall clocks. */
#ifndef HX_TIME_H
#define HX_TIME_H

#include <stdint.h>

uint64_t hx_time_mono_ns(void); /* CLOCK_MONOTONIC, for durations */
uint64_t hx_time_wall_ms(void); /* CLOCK_REALTIME, ms since the epoch */
uint64_t hx_time_wall_s(void);  /* seconds since the epoch */
void hx_time_sleep_ms(uint64_t ms);
static inline double hx_time_ns_to_ms(uint64_t ns) { return (double)ns / 1e6; }

#endif
