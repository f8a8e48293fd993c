// sRGB transfer function, line for line with palm/render/color.py (linear_to_srgb).
vec3 linear_to_srgb(vec3 x) {
    vec3 curve = 1.055 * pow(max(x, vec3(0.0031308)), vec3(1.0 / 2.4)) - 0.055;
    return mix(curve, 12.92 * x, vec3(lessThanEqual(x, vec3(0.0031308))));
}
