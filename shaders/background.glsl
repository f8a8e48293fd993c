// Viewport background: the SG environment seen through the camera, looked up in an equirect
// texture (evaluated from the same lobes on the CPU when the environment changes), using the one
// direction convention of palm/render/envmap.py dir_to_uv: u = atan2(x, z)/2pi + 0.5,
// v = asin(y)/pi + 0.5, row 0 = sky.
#include "color.glsl"

#if defined(VERTEX_SHADER)
in vec2 in_ndc;
out vec2 v_ndc;
void main() {
    v_ndc = in_ndc;
    gl_Position = vec4(in_ndc, 0.999999, 1.0);
}
#endif

#if defined(FRAGMENT_SHADER)
in vec2 v_ndc;
out vec4 f_color;
uniform mat4 u_inv_view_proj;   // clip -> world
uniform vec3 u_eye;
uniform sampler2D u_env;        // equirect, linear radiance, texture row 0 = sky
uniform float u_exposure_scale; // 2^exposure
uniform float u_show_env;       // 1: environment, 0: flat grey
uniform vec3 u_flat_color;      // linear
const float PI = 3.14159265358979;
void main() {
    vec4 p = u_inv_view_proj * vec4(v_ndc, 1.0, 1.0);
    vec3 d = normalize(p.xyz / p.w - u_eye);
    vec2 uv = vec2(atan(d.x, d.z) / (2.0 * PI) + 0.5, asin(clamp(d.y, -1.0, 1.0)) / PI + 0.5);
    vec3 radiance = texture(u_env, vec2(uv.x, 1.0 - uv.y)).rgb;
    vec3 c = mix(u_flat_color, radiance * u_exposure_scale, u_show_env);
    f_color = vec4(clamp(linear_to_srgb(c), 0.0, 1.0), 1.0);
}
#endif
