"""`rawbit bench`: rate-distortion and speed of rawbit models against JPEG, WebP, AVIF and JPEG XL."""
