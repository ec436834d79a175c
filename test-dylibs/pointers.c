/* Pointers in data with addends: symbolic (R_X86_64_64 / R_AARCH64_ABS64)
 * to exported data at positive and negative offsets, and relative ones into
 * the middle of local data. */

int numbers[8] = {10, 11, 12, 13, 14, 15, 16, 17};
const char message[] = "hello, loader";
static int local_numbers[4] = {1, 2, 3, 4};

int *const fourth = &numbers[3];
const char *const message_tail = message + 7;
/* One element before the array: a negative addend. */
int *const before_numbers = (int *)((char *)numbers - sizeof(int));
int *const local_third = &local_numbers[2];

int local_number(int i) { return (i >= 0 && i < 4) ? local_numbers[i] : -1; }
