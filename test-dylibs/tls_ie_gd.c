/* ie_value again, through the general-dynamic model from another
 * translation unit: both models must reach the same block. */
extern __thread int ie_value;

int ie_value_gd(void) { return ie_value; }
